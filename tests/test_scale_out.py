"""The same input through one worker and through a two-process Bytewax cluster gives identical
stored results: shared subscriptions split the MQTT load, Bytewax routes state by key."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from pipeline.tools.broker import free_port
from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher

START = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(second=0, microsecond=0)


def _messages(prefix: str) -> list[tuple[str, dict]]:
    start = START
    out = []
    for step in range(60):  # 5 minutes at 5 s
        ts = start + timedelta(seconds=5 * step)
        for home in range(6):
            for device, kind in (("mains", "meter"), ("fridge", "appliance"), ("ev", "ev")):
                power = float((step * 31 + home * 17 + len(device)) % 900)
                out.append((f"{prefix}shems/h{home}/{device}/reading",
                            {"ts": ts.isoformat(), "power_w": power, "kind": kind,
                             "energy_wh": 1000.0 + step * power / 720}))
    return out


def _snapshot(store_url: str):
    store = open_store(store_url)
    try:
        return (
            sorted((r.home_id, r.device_id, r.ts, r.power_w) for r in store.readings()),
            sorted((w.home_id, w.device_id, w.bucket, w.samples, round(w.mean_power_w, 6),
                    round(w.energy_wh, 6)) for w in store.device_windows()),
            sorted((w.home_id, w.bucket, w.samples, round(w.mean_power_w, 6),
                    round(w.energy_wh, 6)) for w in store.home_windows()),
        )
    finally:
        store.close()


def _run_single(mqtt_url, store_url, prefix, messages):
    flow = FlowProcess(mqtt_url, store_url, prefix).start(idle_exit=4)
    pub = TestPublisher()
    for topic, payload in messages:
        pub.publish(topic, payload)
    pub.close()
    flow.wait()


def _run_cluster(mqtt_url, store_url, prefix, messages):
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    flows = [
        FlowProcess(mqtt_url, store_url, prefix, client_id_prefix="cluster-" + prefix.strip("/").replace("/", "-"),
                    extra_args=["--process-id", str(i), "--addresses", addresses])
        for i in range(2)
    ]
    for f in flows:
        f.start(idle_exit=6, wait=False)
    for f in flows:
        f.wait_connected(90)
    pub = TestPublisher()
    for topic, payload in messages:
        pub.publish(topic, payload)
    pub.close()
    for f in flows:
        f.wait()
    return flows


def test_two_processes_store_what_one_worker_stores(tmp_path, pg_url, mqtt_url, topic_prefix):
    single_url = f"sqlite:///{tmp_path / 'single.db'}"
    _run_single(mqtt_url, single_url, topic_prefix + "one/", _messages(topic_prefix + "one/"))
    flows = _run_cluster(mqtt_url, pg_url, topic_prefix + "two/", _messages(topic_prefix + "two/"))
    single, cluster = _snapshot(single_url), _snapshot(pg_url)
    assert len(single[0]) == 60 * 6 * 3
    assert single[0] == cluster[0]
    assert single[1] == cluster[1]
    assert single[2] == cluster[2]
    # Both processes really took part: the broker gave each a share of the messages.
    received = [int(re.search(r"received\"?[=:] *(\d+)", next(l for l in f.log_lines if "mqtt_source_stopped" in l)).group(1))
                for f in flows]
    assert sum(received) == len(single[0]) and min(received) > 0, received
