"""Issue 10's done-when test: a real `shems run --recovery-dir` takes a hostile corpus (every class
that crashed the flow, and variants) interleaved with good readings from several homes, on SQLite
and PostgreSQL. It never exits, every good reading is stored exactly once, every hostile message
is in dead_letter with a reason, and a restart on the same recovery directory runs clean.

Most classes are refused at the edge, before parsing (pipeline/decode, ValidationSettings); the
generic guards of flows/logic.py keep the process alive for whatever gets past it, which the
in-process tests at the end of this file pin down (a bad record, a poisoned state, a state that
fails in on_notify, notify_at or snapshot).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from sinks.stores import open_store
from tests.conftest import FIXTURES
from tests.flowproc import FlowProcess, TestPublisher


def _j(obj) -> bytes:
    return json.dumps(obj).encode()


def _native(home: str = "hostile", device: str = "dev") -> str:
    return f"shems/{home}/{device}/reading"


# (class, topic, payload)
CORPUS: list[tuple[str, str, bytes]] = [
    ("deep nesting: 100,000 [", _native(), b"[" * 100_000),
    ("deep nesting: 50,000 objects", _native(), b'{"a":' * 50_000),
    ("400-digit power", _native(), b'{"power_w":1' + b"0" * 400 + b"}"),
    ("5,000-digit power", _native(), b'{"power_w":1' + b"0" * 5_000 + b"}"),
    ("5,000-digit ts", _native(), b'{"power_w":5,"ts":1' + b"0" * 5_000 + b"}"),
    ("year 9999 at -14:00", _native(), _j({"power_w": 5, "ts": "9999-12-31T23:59:59-14:00"})),
    ("year 9999 at +14:00", _native(), _j({"power_w": 5, "ts": "9999-12-31T23:59:59+14:00"})),
    ("year 9999 UTC", _native(), _j({"power_w": 5, "ts": "9999-12-31T23:59:59Z"})),
    ("ts 1e20 seconds", _native(), _j({"power_w": 5, "ts": 1e20})),
    ("ts -1e20 seconds", _native(), _j({"power_w": 5, "ts": -1e20})),
    ("ts not a date", _native(), _j({"power_w": 5, "ts": "yesterday-ish"})),
    ("Tasmota Power [null]", "tele/tasmota_dual/SENSOR", _j({"ENERGY": {"Power": [None]}})),
    ("Tasmota Power null", "tele/tasmota_dual/SENSOR", _j({"ENERGY": {"Power": None}})),
    ("Tasmota Power ['x']", "tele/tasmota_dual/SENSOR", _j({"ENERGY": {"Power": ["x", "y"]}})),
    ("Tasmota ENERGY list", "tele/tasmota_dual/SENSOR", _j({"ENERGY": [1, 2]})),
    ("Tasmota year 9999", "tele/tasmota_dual/SENSOR",
     _j({"Time": "9999-12-31T23:59:59", "ENERGY": {"Power": [5, 5], "Total": [1, 1]}})),
    ("Zigbee power list", "zigbee2mqtt/kitchen_plug", _j({"power": [1, 2]})),
    ("Zigbee power object", "zigbee2mqtt/kitchen_plug", _j({"power": {"w": 1}})),
    ("Shelly params list", "shellyplus1pm-test01/events/rpc",
     _j({"method": "NotifyStatus", "params": [1, 2]})),
    ("Shelly switch garbage", "shellyplus1pm-test01/events/rpc",
     _j({"method": "NotifyStatus", "params": {"ts": 1e300, "switch:0": {"apower": [None]}}})),
    ("invalid UTF-8", _native(), b"\xff\xfe\xfd"),
    ("invalid UTF-8 in a string", _native(), b'{"power_w":5,"x":"\xc3\x28"}'),
    ("huge invalid payload (2 MB)", _native(), b"a" * 2_000_000),
    ("NaN", _native(), b'{"power_w":NaN}'),
    ("Infinity", _native(), b'{"power_w":Infinity}'),
    ("-Infinity", _native(), b'{"power_w":-Infinity}'),
    ("1e400", _native(), b'{"power_w":1e400}'),
    ("power a string", _native(), _j({"power_w": "abc"})),
    ("power a bool list", _native(), _j({"power_w": [True]})),
    ("power out of bounds", _native(), _j({"power_w": -1e308})),
    ("JSON null", _native(), b"null"),
    ("JSON string", _native(), b'"power"'),
    ("empty payload", _native(), b""),
    ("unknown Shelly device", "shelly-nobody/status/switch:0", _j({"apower": 5})),
    ("unknown Tasmota device", "tele/nobody/SENSOR", _j({"ENERGY": {"Power": 5}})),
    ("unknown Zigbee device", "zigbee2mqtt/nobody", _j({"power": 5})),
    ("ack garbage", "shems/hostile/dev/ack", _j({"id": [[[]]], "state": {"x": None}})),
    ("year 0001, new home", _native("hostile-y1", "d"),
     _j({"power_w": 5, "ts": "0001-01-01T00:00:00Z"})),
    ("huge valid payload (1 MB)", _native(), _j({"power_w": 5, "pad": "x" * 1_000_000})),
    ("10,000-char home id", _native("h" * 10_000, "d"), _j({"power_w": 5})),
    ("10,000-char device id", _native("hostile", "d" * 10_000), _j({"power_w": 5})),
]


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _good(start: datetime, homes: int = 4, per_home: int = 30) -> list[tuple[str, dict]]:
    out = []
    for i in range(per_home):
        for h in range(homes):
            ts = start + timedelta(seconds=10 * i)
            out.append((_native(f"good-{h}", f"plug-{i % 3}"),
                        {"ts": ts.isoformat(), "power_w": float(100 * h + i)}))
    return out


def _stored(store_url: str):
    store = open_store(store_url)
    try:
        return store.readings(), store.dead_letters()
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shems.db'}"
    return request.getfixturevalue("pg_url")


def test_hostile_corpus_never_stops_the_flow(any_store, tmp_path, mqtt_url, topic_prefix):
    corpus = CORPUS
    assert len(corpus) >= 30
    start = (datetime.now(timezone.utc) - timedelta(minutes=20)).replace(second=0, microsecond=0)
    good = _good(start)
    from pipeline.tools.broker import free_port

    port = free_port()
    flow = FlowProcess(mqtt_url, any_store, topic_prefix,
                       extra_args=["--recovery-dir", str(tmp_path / "recovery"),
                                   "--registry", str(FIXTURES / "registry.toml"),
                                   "--metrics-port", str(port)])
    flow.start()
    pub = TestPublisher()
    hostile = iter(corpus)
    for i, (topic, body) in enumerate(good):
        pub.publish(topic_prefix + topic, body)
        if i % 3 == 2:
            case = next(hostile, None)
            if case is not None:
                pub.publish(topic_prefix + case[1], case[2])
    for case in hostile:
        pub.publish(topic_prefix + case[1], case[2])
    # A valid reading of the year-0001 device: were that reading let in, its minute would close
    # now and reach the home totals within the test.
    closer = (_native("hostile-y1", "d"), {"ts": good[-1][1]["ts"], "power_w": 1.0})
    pub.publish(topic_prefix + closer[0], closer[1])
    pub.close()

    want_hashes = {_sha(c[2]) for c in corpus}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert flow.proc.poll() is None, "the flow exited:\n" + "\n".join(flow.log_lines[-40:])
        readings, dead = _stored(any_store)
        good_stored = [r for r in readings if r.home_id.startswith("good-")]
        if len(good_stored) >= len(good) and want_hashes <= {d.payload_sha256 for d in dead}:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # anything still in flight lands
    assert flow.proc.poll() is None, "the flow exited:\n" + "\n".join(flow.log_lines[-40:])
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    flow.stop()  # SIGTERM: exit 0
    # Dead letters are counted by a bounded code and by step, never by anything a device sent.
    labels = re.findall(r'^shems_dead_letters_total\{reason="([^"]*)"', scraped, re.M)
    assert labels and all(re.fullmatch(r"[a-z][a-z0-9_]{0,47}", label) for label in labels), labels
    by_step = dict(re.findall(r'^shems_dead_letters_by_step_total\{step="([^"]*)",worker="0"\} (\S+)',
                              scraped, re.M))
    assert float(by_step.get("decode", 0)) >= len(corpus), by_step
    assert _metric(scraped, "shems_dead_letters_total") == _metric(scraped, "shems_dead_letters_by_step_total")

    readings, dead = _stored(any_store)
    keys = [(r.home_id, r.device_id, r.ts) for r in readings if r.home_id.startswith("good-")]
    expected = {(t.split("/")[1], t.split("/")[2], datetime.fromisoformat(b["ts"])) for t, b in good}
    assert len(keys) == len(set(keys)) == len(good), (len(keys), len(set(keys)), len(good))
    assert set(keys) == expected

    def letters_of(topic: str, payload: bytes) -> list:
        # Matched by the whole payload's hash and by topic (a clipped topic is a prefix of it).
        return [d for d in dead if d.payload_sha256 == _sha(payload)
                and topic.startswith(d.topic.rstrip("\u2026"))]

    missing = [c[0] for c in corpus if not letters_of(c[1], c[2])]
    assert not missing, f"hostile messages not dead-lettered: {missing}"
    for name, topic, payload in corpus:
        for d in letters_of(topic, payload):
            assert d.reason.strip(), name
            assert d.payload_bytes == len(payload), name
            assert len(d.payload) <= 4097, name  # a bounded prefix, never the whole payload
    # No hostile reading was stored: only the good ones and the year-0001 device's valid one.
    assert all(r.home_id.startswith("good-") or (r.home_id == "hostile-y1" and r.ts.year > 2000)
               for r in readings)

    # A restart on the same recovery directory starts and runs clean: nothing replays into a
    # crash, nothing new is dead-lettered, and new readings are stored.
    dead_before = len(dead)
    flow.log_lines.clear()
    flow.start(idle_exit=3)
    later = _good(start + timedelta(minutes=10), homes=2, per_home=5)
    pub = TestPublisher()
    for topic, body in later:
        pub.publish(topic_prefix + topic, body)
    pub.close()
    assert flow.wait() == 0
    assert not [line for line in flow.log_lines
                if any(e in line for e in ("record_dead_lettered", "state_reset", "spool_careful_replay",
                                           "flow_failed", "Traceback"))]
    readings, dead = _stored(any_store)
    assert len(dead) == dead_before
    keys = {(r.home_id, r.device_id, r.ts) for r in readings if r.home_id.startswith("good-")}
    assert {(t.split("/")[1], t.split("/")[2], datetime.fromisoformat(b["ts"])) for t, b in later} <= keys


# ---------------------------------------------------------------- one device floods

def test_a_flooding_device_is_held_to_its_rate_and_every_other_reading_is_stored(sqlite_url, mqtt_url,
                                                                                  topic_prefix):
    """15,000 readings of one plug a millisecond apart on its clock (a firmware loop), queued by
    the broker while the flow was down, between four homes' good readings: with a burst of 3,600
    (`--device-burst`; the default is ten times that) the plug passes its burst and the 150 its
    15 s of clock earned at the default rate, the rest is counted in two dead letters, not 11,000
    rows; every good reading is stored."""
    from pipeline.settings import FloodSettings

    burst = 3_600
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix,
                       extra_args=["--no-insights", "--device-burst", str(burst)])
    flow.start()
    flow.stop()  # the persistent session stays: the broker queues what comes next
    start = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    good = _good(start)
    flood = 15_000
    pub = TestPublisher()
    for i in range(flood):
        ts = start + timedelta(milliseconds=i)
        pub.publish(topic_prefix + _native("flood", "plug"), {"ts": ts.isoformat(), "power_w": 50.0})
        if i % 125 == 0 and good:
            topic, body = good.pop()
            pub.publish(topic_prefix + topic, body)
    pub.close()
    good = _good(start)
    flow.start(idle_exit=5)
    assert flow.wait(timeout=300) == 0
    readings, dead = _stored(sqlite_url)
    keys = {(r.home_id, r.device_id, r.ts) for r in readings if r.home_id.startswith("good-")}
    assert keys == {(t.split("/")[1], t.split("/")[2], datetime.fromisoformat(b["ts"])) for t, b in good}
    passed = sum(1 for r in readings if r.home_id == "flood")
    earned = flood / 1000 * FloodSettings().rate_per_s
    assert burst <= passed <= burst + earned, passed
    letters = [d for d in dead if d.error == "rate_limited"]
    assert len(letters) == 2 and all("flood/plug" in d.reason for d in letters), [d.reason for d in letters]
    assert "; 1 refused since" in letters[0].reason and "; 10,001 refused since" in letters[1].reason
    assert len(dead) == 2


# ---------------------------------------------------------------- backpressure while the store stalls

def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_a_stalled_store_pauses_the_source_and_loses_nothing(spooled, sqlite_url, tmp_path, mqtt_url,
                                                             topic_prefix):
    """The store stalls (here: another connection holds SQLite's write lock): the worker blocks in
    the sink, the source buffers at most --max-buffered-messages, stops acknowledging, and the
    broker queues the rest; when the store is back everything is stored exactly once."""
    import sqlite3
    import urllib.request

    from flows.mqtt_source import RECEIVE_MAXIMUM
    from flows.spool import Spool
    from pipeline.tools.broker import free_port

    bound = 100
    port = free_port()
    extra = ["--max-buffered-messages", str(bound), "--metrics-port", str(port), "--no-insights"]
    if spooled:
        extra += ["--recovery-dir", str(tmp_path / "recovery")]
    flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix, extra_args=extra).start()
    start = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    # Below Mosquitto's default queue of 1,000 for a client, which would drop the rest (and the
    # flow would log broker_dropped_messages).
    rows = _good(start, homes=4, per_home=150)
    lock = sqlite3.connect(sqlite_url[len("sqlite:///"):], isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        pub = TestPublisher()
        for topic, body in rows[:20]:
            pub.publish(topic_prefix + topic, body)
        pub.flush()
        time.sleep(2.0)  # past --flush-interval: the worker is now blocked writing these
        for topic, body in rows[20:]:
            pub.publish(topic_prefix + topic, body)
        pub.close()
        deadline = time.monotonic() + 20
        while not any("mqtt_source_paused" in line for line in flow.log_lines):
            assert time.monotonic() < deadline, "\n".join(flow.log_lines[-30:])
            time.sleep(0.2)
        # The client process's gauges reach the flow's endpoint a moment later (a copy thread).
        deadline = time.monotonic() + 10
        while True:
            time.sleep(0.5)
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            if _metric(scraped, "shems_source_held_messages") > 0 or time.monotonic() > deadline:
                break
        assert flow.proc.poll() is None
        assert _metric(scraped, "shems_source_buffered_messages") <= bound
        assert 0 < _metric(scraped, "shems_source_held_messages") <= RECEIVE_MAXIMUM
        assert _metric(scraped, "shems_source_pauses_total") >= 1
        if spooled:  # only what was let in reached the disk: the rest waits in the broker
            spool = Spool(tmp_path / "recovery" / "spool" / "part-0", writer=False)
            spooled_now = sum(1 for _ in spool.read_from(0, spool.end))
            spool.close()
            assert spooled_now <= 2 * bound, spooled_now
    except BaseException:
        flow.kill()  # a failed check must not leave the flow running
        raise
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        readings, _ = _stored(sqlite_url)
        if len(readings) >= len(rows):
            break
        time.sleep(0.5)
    assert flow.stop() == 0
    assert any("mqtt_source_resumed" in line for line in flow.log_lines)
    readings, _ = _stored(sqlite_url)
    keys = [(r.home_id, r.device_id, r.ts) for r in readings]
    assert len(keys) == len(set(keys)) == len(rows)


# ---------------------------------------------------------------- the guards, in-process

def _reading(home="h", device="d", ts=None, power=5.0):
    from pipeline.records import Reading

    return Reading(home, device, ts or datetime.now(timezone.utc) - timedelta(minutes=5), power)


def test_a_state_that_breaks_in_on_notify_is_dead_lettered_and_dropped():
    from flows.logic import DISCARD, device_window_builder
    from pipeline.records import DeadLetter
    from pipeline.settings import WindowSettings

    logic = device_window_builder(WindowSettings(), lambda: True)(None)
    logic.on_batch([_reading()])
    logic.state.settings = None  # a state corrupted in a way no code path expected
    out, keep = logic.on_notify()
    assert keep == DISCARD
    assert [(d.step, d.error, d.topic) for d in out] == [("windowing", "AttributeError", "h/d")]
    assert isinstance(out[0], DeadLetter) and "reset" in out[0].reason
    assert logic.state.settings is not None and not logic.state.open  # a fresh state


def test_notify_at_and_snapshot_failures_reset_the_state_and_dead_letter_it_later():
    import pickle

    from flows.logic import device_window_builder
    from pipeline.settings import WindowSettings

    logic = device_window_builder(WindowSettings(), lambda: True)(None)
    logic.on_batch([_reading()])
    logic.state.last_wall = lambda: None  # cannot be pickled, and next_due cannot add to it
    assert logic.notify_at() is None
    # Neither call can return a dead letter: each comes out with the next batch.
    out, _ = logic.on_batch([_reading(device="e")])
    assert [(d.step, d.error, d.topic) for d in out if hasattr(d, "error")] == [
        ("windowing", "TypeError", "h/d")]
    logic.state.last_wall = lambda: None
    assert logic.snapshot() is None  # resume from a fresh state rather than crash the snapshot
    assert pickle.loads(logic.snapshot()).open == {}
    out, _ = logic.on_batch([_reading(power=7.0)])
    assert [(d.step, d.error, d.topic) for d in out if hasattr(d, "error")] == [
        ("windowing", "AttributeError", "h/e")]


def test_a_record_that_passes_on_a_fresh_state_resets_the_poisoned_one():
    from flows.logic import device_window_builder
    from pipeline.records import DeadLetter, DeviceWindow
    from pipeline.settings import WindowSettings

    logic = device_window_builder(WindowSettings(), lambda: True)(None)
    logic.on_batch([_reading()])
    logic.state.energy = None  # poisoned: every window it closes would raise
    later = _reading(ts=datetime.now(timezone.utc) - timedelta(minutes=1))
    out, _ = logic.on_batch([later])
    dead = [d for d in out if isinstance(d, DeadLetter)]
    assert [(d.step, d.error) for d in dead] == [("windowing", "AttributeError")]
    assert "reset" in dead[0].reason  # the state was dead-lettered, not the good reading
    flushed, _ = logic.on_eof()
    assert [w.samples for w in flushed if isinstance(w, DeviceWindow)] == [1]  # the reading lives on


def test_a_bad_record_on_a_fresh_state_is_dead_lettered_and_leaves_nothing_behind():
    from flows.logic import home_total_builder
    from pipeline.records import DeviceKind, DeviceWindow, HomeWindow
    from pipeline.settings import WindowSettings

    logic = home_total_builder(WindowSettings(), frozenset(), lambda: True)(None)
    ancient = DeviceWindow("h", "d", DeviceKind.APPLIANCE, datetime(1, 1, 1, tzinfo=timezone.utc),
                           5.0, 5.0, 5.0, 0.0, 1)
    out, _ = logic.on_batch([ancient])
    assert [(d.step, d.error, d.topic) for d in out] == [("home_total", "OverflowError", "h/d")]
    assert "DeviceWindow(home_id='h'" in out[0].payload
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    fine = [DeviceWindow("h", "d", DeviceKind.APPLIANCE, now - timedelta(minutes=m), 5.0, 5.0, 5.0, 1.0, 6)
            for m in (5, 4, 1)]
    out, _ = logic.on_batch(fine)
    assert [w.bucket for w in out if isinstance(w, HomeWindow)] == [fine[0].bucket, fine[1].bucket]


# ---------------------------------------------------------------- what the broker loses is told

def test_the_flow_warns_of_broker_drops_and_of_a_lost_session(sqlite_url, tmp_path):
    """A private Mosquitto that queues 10 messages for an offline client (Debian's default is
    1,000) and publishes its counters every second: messages dropped while the flow was down are
    logged as broker_dropped_messages on its return, and a session taken over and wiped while it
    was down is logged as mqtt_session_lost."""
    import getpass
    import subprocess

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from pipeline.tools.broker import find_mosquitto, free_port, reachable

    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10\n"
                    f"sys_interval 1\nuser {getpass.getuser()}\n")
    broker = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if reachable("127.0.0.1", port, 0.2):
                break
            time.sleep(0.05)
        flow = FlowProcess(f"mqtt://127.0.0.1:{port}", sqlite_url, "",
                           extra_args=["--recovery-dir", str(tmp_path / "recovery"), "--no-insights"])
        flow.start()
        start = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(second=0, microsecond=0)
        rows = _good(start, homes=1, per_home=45)
        pub = TestPublisher(port=port)
        for topic, body in rows[:5]:
            pub.publish(topic, body)
        pub.flush()
        time.sleep(2.5)  # the broker's counter is seen (and remembered) at least once
        assert flow.stop() == 0
        for topic, body in rows[5:]:  # 40 while the flow is down: 10 queued, 30 dropped
            pub.publish(topic, body)
        pub.close()

        flow.log_lines.clear()
        flow.start(idle_exit=3)
        assert flow.wait() == 0
        drops = [json.loads(line) for line in flow.log_lines if '"broker_dropped_messages"' in line]
        assert drops and sum(d["delta"] for d in drops) == 30, flow.log_lines[-20:]
        assert not any("mqtt_session_lost" in line for line in flow.log_lines)

        # Someone connects with the flow's client id and a clean start, and leaves: the
        # broker-side session (and anything it queued) is gone.
        thief = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                            client_id=f"{flow.client_id_prefix}-p0-0", protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        thief.connect("127.0.0.1", port, clean_start=True, properties=props)
        thief.loop_start()
        time.sleep(0.5)
        thief.disconnect()
        thief.loop_stop()
        flow.log_lines.clear()
        flow.start(idle_exit=2)
        assert flow.wait() == 0
        assert any("mqtt_session_lost" in line for line in flow.log_lines), flow.log_lines[-20:]
    finally:
        broker.terminate()
        broker.wait(10)
