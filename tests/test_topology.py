"""The flow's composite operators in process (bytewax.testing): what comes out of each typed stream.

The broker tests (test_flow_e2e, test_flow_hostile, ...) run the same steps behind Mosquitto in a
``shems run`` process; these feed RawMessage records straight in, so a wiring mistake (a dead
letter reaching the windows, an ack lost between branches) fails here in a second.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.ingest import FLOW_ID, build_flow, prepare_store
from flows.operators import MOVED_STEPS, NEW_STEPS, aggregate, decode_messages
from flows.snapshot_compat import rename_steps
from pipeline.config import IngestConfig
from pipeline.ingest.registry import Registry
from pipeline.records import AckStatus, CommandAck, DeadLetter, RawMessage, Reading, Tick
from pipeline.settings import ValidationSettings, WindowSettings
from sinks.stores import open_store

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FIXTURE = Path(__file__).parent / "fixtures" / "recovery_before_layers"


def native(home: str, device: str, seconds: float, power_w: float) -> RawMessage:
    ts = T0 + timedelta(seconds=seconds)
    body = {"ts": ts.isoformat(), "power_w": power_w}
    return RawMessage(f"shems/{home}/{device}/reading", json.dumps(body).encode(), ts + timedelta(seconds=1))


# Two homes, in arrival order: the kettle's 12:00:50 arrives after its 12:01:20 closed 12:00.
GOOD = [
    native("home-a", "kettle", 0, 100), native("home-b", "fridge", 10, 50),
    native("home-a", "kettle", 20, 200), native("home-a", "kettle", 40, 300),
    native("home-b", "fridge", 50, 70), native("home-a", "kettle", 60, 400),
    native("home-b", "fridge", 70, 60), native("home-a", "kettle", 80, 400),
    native("home-a", "kettle", 50, 999),
]
ACK = RawMessage("shems/home-a/kettle/ack",
                 json.dumps({"command_id": "c1", "status": "applied", "state": "on",
                             "ts": T0.isoformat()}).encode(), T0 + timedelta(seconds=2))
HOSTILE = [
    RawMessage("shems/home-a/kettle/reading", b"{not json", T0),
    RawMessage("nobody/claims/this/topic/at/all", b"{}", T0),
    RawMessage("shems/home-b/fridge/reading", b'{"ts": "2026-11-30T13:00:00+00:00", "power_w": 5}', T0),
    RawMessage("shems/home-b/fridge/reading", b'{"ts": "2026-11-30T12:00:30+00:00", "power_w": NaN}', T0),
    RawMessage("shems/home-b/fridge/reading", b"\xff\xfe", T0),
]
HOSTILE_CODES = {"invalid_json", "unknown_topic", "timestamp_in_future", "not_utf8"}


def _decode_flow(messages):
    flow = Dataflow("topology")
    out = decode_messages("decode_messages", op.input("in", flow, TestingSource(messages)),
                          Registry.empty(), ValidationSettings())
    got = {"readings": [], "dead_letters": [], "acks": []}
    for name, items in got.items():
        op.output(f"{name}_out", getattr(out, name), TestingSink(items))
    return flow, out, got


def test_decode_sends_readings_dead_letters_and_acks_each_to_its_own_stream():
    flow, _, got = _decode_flow([*GOOD, ACK, *HOSTILE])
    run_main(flow)
    assert all(isinstance(r, Reading) for r in got["readings"])
    assert sorted((r.home_id, r.device_id, r.power_w) for r in got["readings"]) == sorted(
        [("home-a", "kettle", p) for p in (100, 200, 300, 400, 400, 999)]
        + [("home-b", "fridge", p) for p in (50, 70, 60)])
    assert [(a.command_id, a.status) for a in got["acks"]] == [("c1", AckStatus.APPLIED)]
    assert all(isinstance(a, CommandAck) for a in got["acks"])
    letters = got["dead_letters"]
    assert all(isinstance(d, DeadLetter) and d.step == "decode" for d in letters)
    # NaN is not JSON: it is refused as invalid JSON, like the broken payload.
    assert sorted(d.error for d in letters) == sorted(
        ["invalid_json", "invalid_json", "unknown_topic", "timestamp_in_future", "not_utf8"])
    assert {d.error for d in letters} == HOSTILE_CODES
    assert {d.topic for d in letters if d.error == "unknown_topic"} == {"nobody/claims/this/topic/at/all"}


def test_aggregate_windows_two_homes_and_keeps_the_late_reading_out_of_its_closed_minute():
    flow = Dataflow("topology")
    decoded = decode_messages("decode_messages", op.input("in", flow, TestingSource([*GOOD, *HOSTILE])),
                              Registry.empty(), ValidationSettings())
    out = aggregate("aggregate", decoded.readings, WindowSettings().event_time_only(), frozenset(),
                    lambda: True)
    got = {"device_windows": [], "late": [], "home_windows": [], "dead_letters": []}
    for name, items in got.items():
        op.output(f"{name}_out", getattr(out, name), TestingSink(items))
    run_main(flow)

    devices = {(w.home_id, w.device_id, w.bucket): w for w in got["device_windows"]}
    minute = timedelta(minutes=1)
    assert set(devices) == {("home-a", "kettle", T0), ("home-a", "kettle", T0 + minute),
                            ("home-b", "fridge", T0), ("home-b", "fridge", T0 + minute)}
    kettle = devices[("home-a", "kettle", T0)]
    assert (kettle.samples, kettle.min_power_w, kettle.max_power_w) == (3, 100, 300)  # not the 999
    fridge = devices[("home-b", "fridge", T0)]
    assert (fridge.samples, fridge.min_power_w, fridge.max_power_w) == (2, 50, 70)
    assert devices[("home-a", "kettle", T0 + minute)].samples == 2
    assert [(lr.reading.power_w, lr.bucket) for lr in got["late"]] == [(999, T0)]
    homes = {(w.home_id, w.bucket): w for w in got["home_windows"]}
    assert set(homes) == {("home-a", T0), ("home-a", T0 + minute), ("home-b", T0), ("home-b", T0 + minute)}
    # One device per home and no meter: the home's minute is its device's minute.
    assert homes[("home-a", T0)].mean_power_w == kettle.mean_power_w
    assert homes[("home-b", T0)].mean_power_w == fridge.mean_power_w
    # Hostile messages stop at decode: nothing the windows or totals dead-letter.
    assert got["dead_letters"] == []


def test_the_whole_flow_stores_every_stream_in_sqlite(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'shems.db'}"
    cfg = IngestConfig(store_url=store_url, window=WindowSettings().event_time_only(), insights=True)
    registry = Registry.empty()
    prepare_store(store_url, registry)
    # A Tick between messages, as the MQTT source sends when it is idle: it must pass through.
    source = TestingSource([*GOOD[:4], Tick(T0 + timedelta(seconds=45)), *GOOD[4:], ACK, *HOSTILE])
    run_main(build_flow(cfg, source, registry))
    store = open_store(store_url)
    try:
        readings = store.readings()
        windows = store.device_windows()
        homes = store.home_windows()
        letters = store.dead_letters()
    finally:
        store.close()
    assert len(readings) == 9  # the late one is stored raw too
    assert sorted((w.home_id, w.device_id, w.samples) for w in windows) == [
        ("home-a", "kettle", 2), ("home-a", "kettle", 3), ("home-b", "fridge", 1), ("home-b", "fridge", 2)]
    assert sorted((w.home_id, w.bucket) for w in homes) == [
        ("home-a", T0), ("home-a", T0 + timedelta(minutes=1)),
        ("home-b", T0), ("home-b", T0 + timedelta(minutes=1))]
    assert {d.error for d in letters} == HOSTILE_CODES and len(letters) == 5
    with sqlite3.connect(tmp_path / "shems.db") as db:
        assert db.execute("SELECT command_id, status FROM command_acks").fetchall() == [("c1", "applied")]


def _stateful_step_ids(step) -> list[str]:
    found = [step.step_id] if type(step).__name__ == "stateful_batch" else []
    for sub in getattr(step, "substeps", []):
        found += _stateful_step_ids(sub)
    return found


def test_every_stateful_step_the_flow_runs_has_its_old_snapshots_renamed(tmp_path):
    cfg = IngestConfig(store_url=f"sqlite:///{tmp_path / 'x.db'}")
    flow = build_flow(cfg, TestingSource([]), Registry.empty())
    # A stateful step whose id changes without an entry here would resume empty.
    assert sorted(_stateful_step_ids(flow)) == sorted(f"{FLOW_ID}.{new}" for new in (*MOVED_STEPS.values(), *NEW_STEPS))


def test_renaming_snapshots_moves_old_step_ids_once(tmp_path):
    recovery = tmp_path / "recovery"
    shutil.copytree(FIXTURE, recovery)
    renames = {f"{FLOW_ID}.{old}": f"{FLOW_ID}.{new}" for old, new in MOVED_STEPS.items()}
    assert rename_steps(recovery, renames) == 10  # 3 decode, 3 device, 2 home, 2 insights snapshots
    assert rename_steps(recovery, renames) == 0
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        ids = dict(db.execute("SELECT step_id, count(*) FROM snaps GROUP BY step_id").fetchall())
    assert ids == {f"{FLOW_ID}.mqtt": 1, f"{FLOW_ID}.store": 1, f"{FLOW_ID}.decode_messages.decode": 3,
                   f"{FLOW_ID}.aggregate.device_windows": 3, f"{FLOW_ID}.aggregate.home_totals": 2,
                   f"{FLOW_ID}.derive_insights.insights": 2}
