"""The flow's Prometheus endpoint shows the pipeline moving; fleet-health gauges count silent homes."""

from __future__ import annotations

import re
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from pipeline import metrics
from pipeline.records import DeviceInfo, DeviceKind, Reading, Source
from pipeline.tools.broker import free_port
from pipeline.tools.fleet_health import FleetHealthReporter, count_silent
from sinks.base import Batch
from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher


def _value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_endpoint_moves_while_the_flow_runs(sqlite_url, mqtt_url, topic_prefix):
    port = free_port()
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix, extra_args=["--metrics-port", str(port)]).start(idle_exit=6)
    url = f"http://127.0.0.1:{port}/metrics"
    before = urllib.request.urlopen(url, timeout=5).read().decode()
    pub = TestPublisher()
    now = datetime.now(timezone.utc)
    for i in range(50):
        pub.publish(f"{topic_prefix}shems/h1/d1/reading", {"ts": (now - timedelta(seconds=50 - i)).isoformat(), "power_w": i})
    pub.publish(f"{topic_prefix}shems/h1/d1/reading", b"{broken")
    pub.close()
    time.sleep(2.0)
    after = urllib.request.urlopen(url, timeout=5).read().decode()
    flow.wait()
    assert _value(before, "shems_messages_received_total") == 0
    assert _value(after, "shems_messages_received_total") == 51
    assert _value(after, "shems_readings_decoded_total") == 50
    assert re.search(r'shems_dead_letters_total\{reason="invalid_json",worker="0"\} 1\.0', after)
    assert _value(after, "shems_sink_batch_rows_count") >= 1
    assert "home_id" not in after  # labels stay bounded


def test_count_silent_homes():
    now = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    seen = {"a": now - timedelta(minutes=1), "b": now - timedelta(hours=2), "c": None}
    assert count_silent(seen, now, timedelta(minutes=15)) == 2


def test_fleet_health_reporter_sets_the_gauges_from_the_store(sqlite_url):
    store = open_store(sqlite_url)
    store.migrate()
    now = datetime.now(timezone.utc)
    store.write(Batch(readings=[Reading("fresh", "m", now, 1.0, kind=DeviceKind.METER),
                                Reading("stale", "m", now - timedelta(hours=1), 1.0)]))
    store.upsert_devices([DeviceInfo("never", "plug", DeviceKind.APPLIANCE, Source.TASMOTA)])
    assert set(store.home_last_seen()) == {"fresh", "stale", "never"}
    store.close()
    reporter = FleetHealthReporter(sqlite_url, interval_s=0.05)
    reporter.start()
    time.sleep(0.5)
    reporter.stopped.set()
    reporter.join(5)
    assert metrics.HOMES_TOTAL._value.get() == 3
    assert metrics.HOMES_SILENT._value.get() == 2


def test_a_viewer_whose_metrics_port_was_taken_after_the_check_logs_it_and_serves_pages(capfd):
    """`shems ui` checks the port before it starts Streamlit; a process that takes it in between
    must cost the metrics, not every page (serve_once runs in each page's script)."""
    import socket

    from ui import metrics as viewer_metrics

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        viewer_metrics.serve_once(taken)  # no exception: the page goes on
        viewer_metrics.serve_once(taken)  # tried once per process, so logged once
    out = capfd.readouterr()
    logged = [line for line in (out.out + out.err).splitlines() if "metrics_not_served" in line]
    assert len(logged) == 1 and str(taken) in logged[0]
