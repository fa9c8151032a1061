"""A recovery directory written by the flow before the layer move (issue 11) still resumes.

tests/fixtures/recovery_before_layers/ is a real ``--recovery-dir`` left by ``shems run`` at
commit 1ac1081 (modules such as ``pipeline.windowing`` and ``pipeline.insights`` at their old
paths), after 25 minutes of readings (12:00-12:24:50 UTC on 2026-11-30, every 10 s) from a native
appliance (home-a/kettle), a native meter (home-c/mains) and a registered Shelly
(shellyplus1pm-test01 -> home-a/boiler), with insights and the example tariff, stopped with SIGTERM.
The 12:24 minute was open at the stop: it lives only in the snapshot, so it can be stored with
its six readings only if the old state loads.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher

FIXTURE = Path(__file__).parent / "fixtures" / "recovery_before_layers"
ROOT = Path(__file__).resolve().parent.parent
OPEN_MINUTE = datetime(2026, 11, 30, 12, 24, tzinfo=UTC)


def test_a_recovery_dir_from_before_the_layer_move_resumes_its_open_minutes(tmp_path, sqlite_url,
                                                                           topic_prefix):
    # The spool keeps topics without their prefix, so this run's own prefix is free to differ.
    recovery = tmp_path / "recovery"
    shutil.copytree(FIXTURE, recovery)
    flow = FlowProcess("mqtt://127.0.0.1:1883", sqlite_url, topic_prefix, extra_args=[
        "--recovery-dir", str(recovery), "--registry", str(ROOT / "tests/fixtures/registry.toml"),
        "--tariffs", str(ROOT / "deploy/tariffs.example.toml")]).start()
    publisher = TestPublisher()
    try:
        for i in range(12):  # two more minutes, closing the one that was open at the stop
            ts = OPEN_MINUTE + timedelta(minutes=1, seconds=10 * i)
            publisher.publish(f"{topic_prefix}shems/home-a/kettle/reading",
                              {"ts": ts.isoformat(), "power_w": 500, "energy_wh": 5000 + i})
            publisher.publish(f"{topic_prefix}shems/home-c/mains/reading",
                              {"ts": ts.isoformat(), "power_w": 700, "energy_wh": 7000 + i,
                               "kind": "meter"})
        publisher.flush()
        time.sleep(4)
    finally:
        publisher.close()
        flow.stop()
    store = open_store(sqlite_url)
    try:
        windows = {(w.home_id, w.device_id, w.bucket): w for w in store.device_windows()}
        letters = store.dead_letters()
    finally:
        store.close()
    assert not letters, [(d.step, d.error, d.reason) for d in letters]
    for home, device, power in (("home-a", "kettle", 100 + 144), ("home-c", "mains", 100 + 144)):
        resumed = windows[(home, device, OPEN_MINUTE)]
        # Its six readings arrived before the stop and were never sent again: only the old
        # snapshot held them.
        assert resumed.samples == 6
        assert resumed.min_power_w == power
    log = "\n".join(flow.log_lines)
    assert "state_reset" not in log and "Traceback" not in log
