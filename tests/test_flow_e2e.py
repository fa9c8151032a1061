"""The real flow, end to end: real Mosquitto, real Bytewax, real PostgreSQL and SQLite.

Readings are published in all four formats plus malformed messages; the stored 1-minute
aggregates must equal an independent polars computation over the same input, every malformed
message must be in dead_letter with its reason, and nothing else may be lost.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipeline.records import DeviceKind
from pipeline.settings import WindowSettings
from sinks.stores import open_store
from tests import reference
from tests.conftest import FIXTURES
from tests.flowproc import FlowProcess, TestPublisher

LONDON = ZoneInfo("Europe/London")


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scenario:
    """Known readings for three homes, each device in the format its vendor speaks."""

    def __init__(self, seed: int = 7, minutes: int = 5, step_s: int = 10) -> None:
        rng = random.Random(seed)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        self.start = now - timedelta(minutes=minutes + 15)
        self.rows: list[dict] = []  # the expected readings
        self.messages: list[tuple[str, object]] = []
        n = minutes * 60 // step_s
        times = [self.start + timedelta(seconds=i * step_s) for i in range(n)]

        def add(home, device, kind, ts, power, energy=None, voltage=None, current=None):
            self.rows.append(dict(home_id=home, device_id=device, kind=kind.value, ts=ts,
                                  power_w=power, energy_wh=energy, voltage_v=voltage,
                                  current_a=current))

        # home-a: no meter -> total is the sum of its devices
        boiler_e = 1000.0
        for i, ts in enumerate(times):
            p = round(rng.uniform(1800, 2200), 1)
            boiler_e = round(boiler_e + p * step_s / 3600, 3)
            status = {"id": 0, "apower": p, "aenergy": {"total": boiler_e}}
            if i == 0:  # the first frame carries everything; later ones only what changed
                status.update(voltage=231.5, current=8.6)
            self.messages.append((
                "shellyplus1pm-test01/events/rpc",
                {"src": "shellyplus1pm-test01", "dst": "shellyplus1pm-test01/events",
                 "method": "NotifyStatus", "params": {"ts": ts.timestamp(), "switch:0": status}},
            ))
            add("home-a", "boiler", DeviceKind.APPLIANCE, ts, p, boiler_e, 231.5, 8.6)
        dryer_kwh, washer_kwh = 12.5, 40.25
        for ts in times:
            pd, pw = rng.choice([0.0, 2400.0]), round(rng.uniform(150, 500))
            dryer_kwh = round(dryer_kwh + pd * step_s / 3.6e6, 6)
            washer_kwh = round(washer_kwh + pw * step_s / 3.6e6, 6)
            local = ts.astimezone(LONDON).replace(tzinfo=None).isoformat(timespec="seconds")
            self.messages.append(("tele/tasmota_dual/SENSOR", {
                "Time": local,
                "ENERGY": {"TotalStartTime": "2024-01-01T00:00:00", "Total": [dryer_kwh, washer_kwh],
                           "Yesterday": [0.5, 0.2], "Today": [0.1, 0.1], "Power": [pd, pw],
                           "Voltage": [229, 229], "Current": [round(pd / 229, 3), round(pw / 229, 3)]},
            }))
            add("home-a", "dryer", DeviceKind.APPLIANCE, ts, pd, dryer_kwh * 1000, 229, round(pd / 229, 3))
            add("home-a", "washer", DeviceKind.APPLIANCE, ts, pw, washer_kwh * 1000, 229, round(pw / 229, 3))
        for ts in times[::3]:  # a sparser Zigbee plug
            p = rng.choice([0.0, 0.0, 2950.0])
            self.messages.append(("zigbee2mqtt/kitchen_plug",
                                  {"power": p, "voltage": 230, "current": round(p / 230, 2),
                                   "state": "ON", "linkquality": 120, "last_seen": _iso(ts)}))
            add("home-a", "kettle", DeviceKind.APPLIANCE, ts, p, None, 230, round(p / 230, 2))
        # home-b: a Shelly Pro 3EM meter and a Tasmota plug behind it
        for ts in times:
            p = round(rng.uniform(300, 900), 2)
            self.messages.append(("shellypro3em-test02/events/rpc",
                                  {"src": "shellypro3em-test02", "dst": "shellypro3em-test02/events",
                                   "method": "NotifyStatus",
                                   "params": {"ts": ts.timestamp(), "em:0": {"id": 0, "total_act_power": p}}}))
            add("home-b", "mains", DeviceKind.METER, ts, p)
            tv = round(rng.uniform(80, 120), 1)
            local = ts.astimezone(LONDON).replace(tzinfo=None).isoformat(timespec="seconds")
            self.messages.append(("tele/tasmota_plug/SENSOR",
                                  {"Time": local, "ENERGY": {"Total": 3.25, "Power": tv,
                                                             "Voltage": 230, "Current": 0.45}}))
            add("home-b", "tv", DeviceKind.APPLIANCE, ts, tv, 3250.0, 230, 0.45)
        # home-c: native devices, a meter with a one-sample counter glitch
        grid_e = 5000.0
        for i, ts in enumerate(times):
            p = round(rng.uniform(-1500, 3000), 1)  # negative: PV export
            grid_e = round(grid_e + max(p, 0) * step_s / 3600, 3)
            energy = 0.0 if i == 7 else grid_e  # the glitch: reads 0 once, then returns
            payload = {"ts": ts.timestamp() if i % 2 else _iso(ts), "power_w": p,
                       "energy_wh": energy, "kind": "meter"}
            self.messages.append(("shems/home-c/grid/reading", payload))
            add("home-c", "grid", DeviceKind.METER, ts, p, energy)
            fridge = rng.choice([2.0, 95.0])
            self.messages.append(("shems/home-c/fridge/reading",
                                  {"ts": int(ts.timestamp() * 1000), "power_w": fridge}))
            add("home-c", "fridge", DeviceKind.APPLIANCE, ts, fridge)

        far_future = _iso(now + timedelta(days=400))
        self.malformed: list[tuple[str, bytes | str]] = [
            ("shems/home-c/fridge/reading", b"{not json"),
            ("shems/home-c/fridge/reading", b'{"ts": 1, "power_w": NaN}'),
            ("shems/home-c/fridge/reading", b'{"power_w": "abc"}'),
            ("shems/home-c/fridge/reading", b'{"ts": "%s"}' % _iso(now).encode()),
            ("shems/home-c/fridge/reading", b'{"ts": "%s", "power_w": 5}' % far_future.encode()),
            ("shems/home-c/fridge/reading", b'{"power_w": 1e12}'),
            ("shems/home-c/fridge/reading", b"\xff\xfe\x00binary"),
            ("tele/unknown_dev/SENSOR", b'{"Time":"2024-01-01T00:00:00","ENERGY":{"Power":5}}'),
            ("zigbee2mqtt/garage_plug", b'{"power": 12}'),
            ("shellyplus1pm-nobody/events/rpc",
             b'{"src":"shellyplus1pm-nobody","method":"NotifyStatus","params":{"ts":1,"switch:0":{"apower":1}}}'),
        ]

    def expected(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows).with_columns(pl.col("ts").dt.convert_time_zone("UTC"))


def _frame(rows, columns) -> pl.DataFrame:
    return pl.DataFrame([{c: getattr(r, c) for c in columns} for r in rows])


def _assert_frames_close(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    got, want = got.sort(keys), want.sort(keys)
    assert got.height == want.height, f"{got.height} rows stored, {want.height} expected"
    assert got.select(keys).rows() == want.select(keys).rows()
    for col in [c for c in want.columns if c not in keys]:
        for g, w in zip(got[col].to_list(), want[col].to_list()):
            if isinstance(w, float) or isinstance(g, float):
                assert g is not None and w is not None and math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-6), (col, g, w)
            else:
                assert g == w, (col, g, w)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_all_formats_end_to_end(backend, request, tmp_path, mqtt_url, topic_prefix):
    store_url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    scenario = Scenario()
    flow = FlowProcess(mqtt_url, store_url, topic_prefix,
                       extra_args=["--registry", str(FIXTURES / "registry.toml")])
    flow.start(idle_exit=8)  # generous: a loaded machine may pause the publisher
    pub = TestPublisher()
    for topic, payload in scenario.messages:
        pub.publish(topic_prefix + topic, payload)
    for topic, payload in scenario.malformed:
        pub.publish(topic_prefix + topic, payload)
    # Far behind the fridge's newest reading: its minute has closed, so it is late.
    late_ts = scenario.start + timedelta(seconds=5)
    pub.publish(topic_prefix + "shems/home-c/fridge/reading", {"ts": _iso(late_ts), "power_w": 4321.0})
    pub.close()
    flow.wait()

    store = open_store(store_url)
    try:
        want = scenario.expected()
        stored = store.readings()
        cols = ["home_id", "device_id", "ts", "power_w", "energy_wh", "voltage_v", "current_a"]
        got = _frame(stored, cols)
        late_row = pl.DataFrame([dict(home_id="home-c", device_id="fridge", ts=late_ts, power_w=4321.0,
                                      energy_wh=None, voltage_v=None, current_a=None)],
                                schema=want.select(cols).schema)
        # The late reading is stored raw (nothing is lost) ...
        _assert_frames_close(got, pl.concat([want.select(cols), late_row]), ["home_id", "device_id", "ts"])
        # ... counted, and left out of the aggregates.
        assert store.counts()["late_readings"] == 1

        settings = WindowSettings()
        want_dev = reference.device_minutes(want, settings)
        got_dev = _frame(store.device_windows(), want_dev.columns)
        _assert_frames_close(got_dev, want_dev, ["home_id", "device_id", "bucket"])

        want_home = reference.home_minutes(want_dev)
        got_home = _frame(store.home_windows(), want_home.columns)
        _assert_frames_close(got_home, want_home, ["home_id", "bucket"])

        dead = store.dead_letters()
        assert len(dead) == len(scenario.malformed)
        sent = sorted((t, p if isinstance(p, bytes) else p.encode()) for t, p in scenario.malformed)
        stored_dead = sorted((d.topic, d.payload.encode()) for d in dead)
        # non-UTF-8 bytes are stored with replacement characters: compare those loosely
        assert [t for t, _ in stored_dead] == [t for t, _ in sent]
        assert all(d.reason and len(d.reason) > 8 for d in dead), [d.reason for d in dead]
        devices = {(d.home_id, d.device_id): d for d in store.devices()}
        assert devices[("home-c", "grid")].kind == DeviceKind.METER  # self-registered with its kind
        assert devices[("home-c", "fridge")].first_seen == scenario.start
    finally:
        store.close()
