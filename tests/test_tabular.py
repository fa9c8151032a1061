"""Files to readings on real slices (REFIT wide, SGSC per-interval kWh), `shems import` into a real
store, replay to the real broker, and the simulator's physics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from pipeline.ingest.tabular import TableSpec, parse_device_cols, readings_frame
from pipeline.records import DeviceKind
from pipeline.tools.file_replay import replay, schedule
from pipeline.tools.publisher import Publisher
from pipeline.tools.simulator import SimulatedHome, simulated_day
from sinks.stores import open_store
from tests.conftest import FIXTURES

REFIT = FIXTURES / "refit_house2_2h_wide.csv"
REFIT_DST = FIXTURES / "refit_house2_dst_wide.csv"
SGSC = FIXTURES / "sgsc_3homes_2days.csv"


def refit_spec(**kw) -> TableSpec:
    return TableSpec(layout="wide", ts_col="timestamp", home_col="house", tz="Europe/London",
                     device_cols=parse_device_cols("aggregate_w=mains:meter,kettle_w=kettle,washing_machine_w=washer"),
                     **kw)


def test_wide_refit_to_long_readings_in_utc():
    frame = readings_frame(REFIT, refit_spec(skip_flag_col="aggregate_missing"))
    raw = pl.read_csv(REFIT, try_parse_dates=True)
    assert frame.height == 3 * raw.filter(~pl.col("aggregate_missing")).height
    first = frame.filter(pl.col("device_id") == "mains").row(0, named=True)
    # September in London is BST: local time is UTC + 1 h.
    assert first["ts"] == raw["timestamp"][0].replace(tzinfo=timezone.utc) - timedelta(hours=1)
    assert first["kind"] == "meter" and first["power_w"] == raw["aggregate_w"][0]
    kettle = frame.filter(pl.col("device_id") == "kettle")
    assert kettle["power_w"].max() == raw["kettle_w"].max() > 1000


def test_spring_forward_hour_that_no_clock_showed_is_dropped():
    spec = refit_spec()
    frame = readings_frame(REFIT_DST, spec)
    mains = frame.filter(pl.col("device_id") == "mains")["ts"]
    assert mains[0] == datetime(2014, 3, 30, 0, 30, tzinfo=timezone.utc)  # GMT until 01:00
    assert datetime(2014, 3, 30, 1, 0, tzinfo=timezone.utc) in mains.to_list()  # 02:00 BST
    assert mains.len() == 120 and sum(spec.dropped) == 3 * 120  # 01:00-01:59:30 local never existed


def test_interval_kwh_becomes_mean_power_and_a_cumulative_counter():
    spec = TableSpec(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")
    frame = readings_frame(SGSC, spec)
    raw = pl.read_csv(SGSC, try_parse_dates=True).sort(["customer_id", "reading_datetime"])
    home = str(raw["customer_id"][0])
    rows = frame.filter(pl.col("home_id") == home).sort("ts")
    kwh = raw.filter(pl.col("customer_id") == raw["customer_id"][0])["general_supply_kwh"].to_list()
    assert rows["power_w"].to_list()[:3] == pytest.approx([k * 2000 for k in kwh[:3]])  # kWh per 30 min -> W
    assert rows["energy_wh"].to_list()[:3] == pytest.approx([sum(kwh[:i + 1]) * 1000 for i in range(3)])
    # AEST, no DST: local midnight is 14:00 UTC the day before.
    assert rows["ts"][0] == datetime(2013, 1, 9, 14, 0, tzinfo=timezone.utc)
    assert set(frame["kind"]) == {"meter"} and set(frame["device_id"]) == {"mains"}


def test_header_names_are_found_without_the_spaces_around_them(tmp_path):
    """Octopus Energy's consumption export (its header as the account page writes it): a space
    after each comma, in the header and in the cells."""
    path = tmp_path / "consumption.csv"
    path.write_text(" Consumption (kWh), Start, End\n"
                    "0.123, 2026-11-01T00:00:00+00:00, 2026-11-01T00:30:00+00:00\n"
                    "0.200, 2026-11-01T00:30:00+00:00, 2026-11-01T01:00:00+00:00\n")
    spec = TableSpec(layout="interval", ts_col="Start", home_id="me", interval_kwh_col="Consumption (kWh)")
    frame = readings_frame(path, spec).sort("ts")
    assert frame["ts"].to_list() == [datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc),
                                      datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)]
    assert frame["power_w"].to_list() == pytest.approx([246.0, 400.0])
    # a name that would clash once trimmed keeps its spaces
    clash = tmp_path / "clash.csv"
    clash.write_text("ts, ts,home_id,device_id,power_w\n2026-11-01T00:00:00Z,x,h,d,5\n")
    assert readings_frame(clash, TableSpec()).height == 1


def test_bad_column_names_are_clear_errors():
    with pytest.raises(ValueError, match="missing column.*nope"):
        readings_frame(REFIT, TableSpec(layout="wide", ts_col="nope", home_col="house",
                                        device_cols=parse_device_cols("aggregate_w=mains")))
    with pytest.raises(ValueError, match="column=device"):
        parse_device_cols("aggregate_w")


def test_shems_import_cli_into_both_stores_equals_the_polars_reference(store_url):
    from pipeline.settings import WindowSettings
    from tests import reference

    cmd = [sys.executable, "-m", "pipeline.cli", "import", str(SGSC), "--layout", "interval",
           "--ts-col", "reading_datetime", "--home-col", "customer_id",
           "--interval-kwh", "general_supply_kwh", "--tz", "Australia/Brisbane", "--store-url", store_url]
    for _ in range(2):  # a second import changes nothing
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "imported 192 readings" in proc.stdout
    spec = TableSpec(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")
    want = reference.device_minutes(readings_frame(SGSC, spec), WindowSettings())
    store = open_store(store_url)
    try:
        assert store.counts()["readings"] == 192
        got = store.device_windows()
        assert [(w.home_id, w.bucket, w.samples) for w in got] == list(zip(want["home_id"], want["bucket"], want["samples"]))
        assert [w.energy_wh for w in got] == pytest.approx(want["energy_wh"].to_list())
        homes = store.home_windows()
        total = sum(w.energy_wh for w in homes) / 1000
        raw = pl.read_csv(SGSC)
        first_intervals = raw.sort("reading_datetime").group_by("customer_id").first()["general_supply_kwh"].sum()
        assert total == pytest.approx(raw["general_supply_kwh"].sum() - first_intervals)
    finally:
        store.close()


def test_a_wide_import_forms_every_home_minute_from_its_meter(sqlite_url):
    """A batch holds hours of every device: the home totals must not depend on the order in which
    the per-device steps hand their windows on (a meter's minutes arriving after an appliance's
    later ones were once dropped as late)."""
    from flows.batch_import import run_import
    from pipeline.ingest.tabular import iter_reading_batches
    from pipeline.settings import WindowSettings
    from tests import reference

    spec = refit_spec(skip_flag_col="aggregate_missing")
    frame = readings_frame(REFIT, spec)
    prepare = open_store(sqlite_url)
    prepare.migrate()
    prepare.close()
    run_import(lambda: iter_reading_batches(REFIT, spec, frame=frame), sqlite_url,
               meter_home_ids=frozenset(frame["home_id"].unique()))
    want = reference.device_minutes(frame.filter(pl.col("device_id") == "mains"), WindowSettings())
    store = open_store(sqlite_url)
    try:
        homes = store.home_windows()
        assert [w.bucket for w in homes] == want["bucket"].to_list()
        assert [w.mean_power_w for w in homes] == pytest.approx(want["mean_power_w"].to_list())
        assert store.counts()["late_readings"] == 0
    finally:
        store.close()


def test_import_cli_rejects_a_bad_layout_argument_with_a_reason(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "import", str(REFIT), "--layout", "wide",
                           "--store-url", f"sqlite:///{tmp_path}/x.db"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--device-cols" in proc.stderr


def test_schedule_divides_event_gaps_by_speed():
    assert schedule([100.0, 110.0, 130.0], 10, 5.0) == [5.0, 6.0, 8.0]
    assert schedule([100.0, 200.0], 0, 1.0) == [1.0, 1.0]
    assert schedule([100.0, 100.0, 100.0], 0, 1.0, max_rate=2) == [1.0, 1.5, 2.0]


def test_replay_publishes_every_reading_once_to_the_real_broker(mqtt_url, topic_prefix):
    got: list[dict] = []
    done = threading.Event()
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append({"topic": m.topic, **json.loads(m.payload)})
    sub.on_subscribe = lambda *a: done.set()
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(f"{topic_prefix}shems/#", qos=1)
    sub.loop_start()
    assert done.wait(10)
    spec = refit_spec(skip_flag_col="aggregate_missing")
    publisher = Publisher(mqtt_url)
    sent = replay(REFIT, spec, publisher, speed=0, topic_prefix=topic_prefix, progress=False)
    publisher.close()
    frame = readings_frame(REFIT, refit_spec(skip_flag_col="aggregate_missing"))
    deadline = datetime.now() + timedelta(seconds=10)
    while len(got) < sent and datetime.now() < deadline:
        done.wait(0.05)
    sub.loop_stop()
    assert sent == frame.height == len(got)
    keys = {(m["topic"], m["ts"]) for m in got}
    assert len(keys) == sent
    kettle = [m for m in got if m["topic"].endswith("/kettle/reading")]
    assert max(m["power_w"] for m in kettle) == frame.filter(pl.col("device_id") == "kettle")["power_w"].max()
    assert all(m["kind"] == "meter" for m in got if "/mains/" in m["topic"])


def test_simulated_homes_are_deterministic_and_physically_consistent():
    day = datetime(2024, 6, 21, tzinfo=timezone.utc)
    a = simulated_day(SimulatedHome("h", 7), day)
    b = simulated_day(SimulatedHome("h", 7), day)
    assert [(r.device_id, r.power_w) for r in a] == [(r.device_id, r.power_w) for r in b]
    home = SimulatedHome("h", 7)
    for minute in range(0, 1440, 7):
        p = home.power_at(day + timedelta(minutes=minute))
        subs = sum(v for k, v in p.items() if k != "mains")
        assert home.base_w * 0.94 <= p["mains"] - subs <= home.base_w * 1.06  # meter = loads + base
    by_device: dict[str, list] = {}
    for r in a:
        by_device.setdefault(r.device_id, []).append(r)
    for device, readings in by_device.items():
        counters = [r.energy_wh for r in readings]
        assert counters == sorted(counters), device  # counters never go backwards
    daily_kwh = by_device["mains"][-1].energy_wh / 1000
    assert 2 <= daily_kwh <= 60


def test_pv_is_negative_in_daylight_only():
    homes = [SimulatedHome(f"h{i}", i) for i in range(40)]
    pv = next(h for h in homes if h.pv_kw)
    day = datetime(2024, 6, 21, tzinfo=timezone.utc)
    assert pv.power_at(day + timedelta(hours=13))["pv"] < 0
    assert pv.power_at(day + timedelta(hours=2))["pv"] == 0
    kinds = dict(pv.devices())
    assert kinds["pv"] == DeviceKind.PV and kinds["mains"] == DeviceKind.METER
