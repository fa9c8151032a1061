"""A message that kills the process outright (what no guard in the flow can catch: the OOM killer,
a segfault) must not be replayed from the spool on every start for ever.

The crash is real: with SHEMS_TEST_CRASH_ON_PAYLOAD set, the decode step calls os._exit(1) on a
message containing the marker (flows/logic.py; the variable is never set outside tests)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

from flows.logic import CRASH_MARKER_ENV
from flows.spool import CAREFUL_AFTER_STARTS, CrashGuard, Spool
from pipeline.records import RawMessage
from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher

MARKER = "CRASH-ME-f81d"


def test_crash_guard_counts_starts_and_names_the_message_in_hand(tmp_path):
    spool = Spool(tmp_path)
    now = datetime.now(timezone.utc)
    ends = [spool.append(RawMessage(f"t/{i}", b"x" * i, now)) for i in range(1, 6)]
    # Nothing to replay: nothing can crash us, whatever the file says.
    assert CrashGuard(tmp_path, spool.end, spool.end).starts == 0
    for n in range(1, CAREFUL_AFTER_STARTS + 1):
        guard = CrashGuard(tmp_path, ends[0], spool.end)
        assert (guard.starts, guard.careful, guard.crashed) == (n, False, None)
        guard.close()
    guard = CrashGuard(tmp_path, ends[0], spool.end)
    assert guard.careful and guard.crashed is None
    guard.handing(ends[2])  # ... and the process dies here
    guard = CrashGuard(tmp_path, ends[0], spool.end)
    assert guard.careful and guard.crashed == ends[2]
    culprit = RawMessage("t/4", b"x" * 4, now)
    assert not guard.is_poison(culprit)
    assert guard.dead_letter(culprit).error == "crashed_worker"
    guard.settled()  # the careful replay got through
    guard.close()
    # Any later copy of the culprit (a redelivery) is known by its content, in later starts too.
    copy = RawMessage("t/4", b"x" * 4, now + timedelta(seconds=5))
    assert CrashGuard(tmp_path, ends[0], spool.end).is_poison(copy)
    assert not CrashGuard(tmp_path, ends[0], spool.end).is_poison(RawMessage("t/4", b"y", now))
    # Progress past the crash: a start from a later offset begins counting afresh.
    guard = CrashGuard(tmp_path, ends[3], spool.end)
    assert (guard.starts, guard.careful, guard.crashed) == (1, False, None)


def test_a_message_that_kills_the_process_is_dead_lettered_and_the_restarts_converge(
        sqlite_url, tmp_path, mqtt_url, topic_prefix, monkeypatch):
    monkeypatch.setenv(CRASH_MARKER_ENV, MARKER)
    start = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    good = [(f"shems/home-{i % 3}/plug-{i % 2}/reading",
             {"ts": (start + timedelta(seconds=10 * i)).isoformat(), "power_w": float(i)})
            for i in range(90)]
    poison = json.dumps({"ts": start.isoformat(), "power_w": 1.0, "note": MARKER}).encode()
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix,
                       extra_args=["--recovery-dir", str(tmp_path / "recovery")])
    flow.start()
    pub = TestPublisher()
    for topic, body in good[:40]:
        pub.publish(topic_prefix + topic, body)
    pub.publish(f"{topic_prefix}shems/home-0/plug-0/reading", poison)
    for topic, body in good[40:]:
        pub.publish(topic_prefix + topic, body)
    pub.close()
    assert flow.proc.wait(60) == 1  # the first run dies on the poison

    outcomes = []
    logs: list[list[str]] = []
    for _ in range(CAREFUL_AFTER_STARTS + 4):
        flow.log_lines.clear()
        flow.start(idle_exit=3, wait=False)
        rc = flow.proc.wait(120)
        time.sleep(0.3)  # the pump thread reads the last lines
        logs.append(list(flow.log_lines))
        outcomes.append((rc, any("spool_careful_replay" in line for line in flow.log_lines)))
        if rc == 0:
            break
    # Starts from the same offset die CAREFUL_AFTER_STARTS times; the next replays one message at
    # a time and dies with the poison in hand; the next dead-letters it and runs clean. (One more
    # round is allowed: a slow start may snapshot a later offset before it reaches the poison.)
    tail = "\n".join(logs[-1][-30:])
    assert outcomes[-1] == (0, True), (outcomes, tail)
    assert outcomes[-2] == (1, True), outcomes
    assert all(rc == 1 for rc, _ in outcomes[:-1]), outcomes
    assert CAREFUL_AFTER_STARTS + 2 <= len(outcomes) <= CAREFUL_AFTER_STARTS + 3, outcomes
    assert [careful for _, careful in outcomes[:CAREFUL_AFTER_STARTS]] == [False] * CAREFUL_AFTER_STARTS

    # A later start on the same recovery directory is ordinary: no careful replay, no crash.
    flow.log_lines.clear()
    flow.start(idle_exit=2)
    assert flow.proc.wait(60) == 0
    assert not any("spool_careful_replay" in line for line in flow.log_lines)

    store = open_store(sqlite_url)
    try:
        keys = [(r.home_id, r.device_id, r.ts) for r in store.readings()]
        dead = store.dead_letters()
    finally:
        store.close()
    expected = {(t.split("/")[1], t.split("/")[2], datetime.fromisoformat(b["ts"])) for t, b in good}
    assert len(keys) == len(set(keys)) == len(good)  # every good reading, exactly once
    assert set(keys) == expected
    # The poison, once per copy received: the broker delivers it again when the ack of the first
    # copy had not left the process before it died.
    crashed = [d for d in dead if d.step == "replay"]
    assert crashed and len(crashed) == len(dead), dead
    for d in crashed:
        assert d.error == "crashed_worker"
        assert d.topic == "shems/home-0/plug-0/reading"
        assert d.payload_sha256 == hashlib.sha256(poison).hexdigest()
        assert "died while handling this message" in d.reason
