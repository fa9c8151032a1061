"""Stop (or SIGKILL) the flow mid-stream, keep publishing, start it again: every reading is
stored exactly once, and with --recovery-dir the minutes open at the stop are aggregated right."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.settings import WindowSettings
from sinks.stores import open_store
from tests import reference
from tests.flowproc import FlowProcess, TestPublisher, broker_dropped

DEVICES = 8
STEP_S = 5


def _readings(count: int) -> list[dict]:
    start = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(second=0, microsecond=0)
    rows = []
    for i in range(count):
        device = i % DEVICES
        ts = start + timedelta(seconds=(i // DEVICES) * STEP_S)
        rows.append(dict(home_id="home-r", device_id=f"plug-{device}", kind="appliance", ts=ts,
                         power_w=float((i * 37) % 1500), energy_wh=None, voltage_v=None,
                         current_a=None))
    return rows


def _publish(pub: TestPublisher, prefix: str, rows: list[dict], rate: float | None = None) -> None:
    for i, r in enumerate(rows):
        pub.publish(f"{prefix}shems/{r['home_id']}/{r['device_id']}/reading",
                    {"ts": r["ts"].isoformat(), "power_w": r["power_w"]})
        if rate and i % 20 == 19:
            time.sleep(20 / rate)
    pub.flush()


def _stored(url: str) -> int:
    store = open_store(url)
    try:
        return store.counts()["readings"]
    finally:
        store.close()


@pytest.mark.parametrize("client", ["process", "in_process"])
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_stores_every_reading_once(how, client, sqlite_url, tmp_path, mqtt_url, topic_prefix):
    """With the MQTT client in a process of its own (the default: it writes the spool and goes
    on for a moment after its flow is killed) and in the flow's process."""
    rows = _readings(2000)
    # Mosquitto's default max_queued_messages (1000) drops QoS 1 messages queued for an offline
    # session beyond that, silently: what is queued while the flow is down stays well below it.
    first, while_down, after = rows[:800], rows[800:1200], rows[1200:]
    extra = ["--recovery-dir", str(tmp_path / "recovery")]
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix,
                       extra_args=extra + (["--mqtt-in-process"] if client == "in_process" else []))
    flow.start()
    pub = TestPublisher()
    # Stop the flow while the first part is still being published.
    publisher = threading.Thread(target=_publish, args=(pub, topic_prefix, first, 400.0))
    publisher.start()
    # Once the first readings are stored (a spawned client process takes a moment longer to
    # hand over its first batch than an in-process client).
    deadline = time.monotonic() + 10
    while _stored(sqlite_url) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if how == "sigterm":
        flow.stop()
    else:
        flow.kill()
    publisher.join()
    _publish(pub, topic_prefix, while_down)  # the broker queues these for the flow's session

    stored_mid_way = _stored(sqlite_url)
    assert 0 < stored_mid_way < len(first) + len(while_down), stored_mid_way

    flow.start(idle_exit=4)
    # Paced: the restarted flow first drains what the broker queued while it was down.
    _publish(pub, topic_prefix, after, rate=400.0)
    pub.close()
    flow.wait()
    if how == "sigkill":  # what was spooled after the last snapshot came from the spool again
        assert any('"spool_replay"' in line for line in flow.log_lines), flow.log_lines[-30:]

    store = open_store(sqlite_url)
    try:
        stored = store.readings()
        keys = [(r.device_id, r.ts) for r in stored]
        if len(set(keys)) < len(rows):
            # Tell a broker-side loss (queue limit) apart from one of ours.
            pytest.fail(f"{len(rows) - len(set(keys))} readings missing; broker dropped counter now "
                        f"{broker_dropped()} (Mosquitto max_queued_messages)")
        assert len(keys) == len(set(keys)) == len(rows)
        assert set(keys) == {(r["device_id"], r["ts"]) for r in rows}
        want = reference.device_minutes(pl.DataFrame(rows), WindowSettings())
        got = {(w.device_id, w.bucket): (w.samples, round(w.mean_power_w, 6), round(w.energy_wh, 6))
               for w in store.device_windows()}
        expected = {(r["device_id"], r["bucket"]): (r["samples"], round(r["mean_power_w"], 6),
                                                    round(r["energy_wh"], 6))
                    for r in want.iter_rows(named=True)}
        assert got == expected
    finally:
        store.close()
