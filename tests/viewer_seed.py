"""A store for the viewer's tests, filled through the real import path (windowing, home totals,
store sink): a real REFIT house 2 slice (two hours, shifted to end 20 minutes ago, so its live
page is stale) and a simulated home over the last two days (fresh, with PV or not by its seed);
plus forecasts, scores, anomalies and recommendations written as their producers would, and
three users: a homeowner of the REFIT home, an operator and an admin."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from flows.batch_import import run_import
from pipeline.ingest.tabular import TableSpec, frame_to_readings, parse_device_cols, readings_frame
from pipeline.records import Anomaly, AnomalyKind, Forecast, ForecastScore, Reading, Recommendation
from pipeline.tools.simulator import make_homes
from sinks.base import Batch
from sinks.stores import open_store

FIXTURES = Path(__file__).parent / "fixtures"
REFIT = FIXTURES / "refit_house2_2h_wide.csv"
APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"

OWN_HOME = "refit-house2"
OTHER_HOME = "sim-home-0000"
PASSWORDS = {"alice": "alice-secret-1", "olga": "olga-secret-12", "adam": "adam-secret-123"}
OTHER_ANOMALY = "The fridge of the simulated home runs far longer than usual."
OTHER_RECOMMENDATION = "Move the simulated EV charging to the night"


@dataclass(frozen=True)
class Seeded:
    url: str
    now: datetime


def refit_readings(end: datetime) -> list[Reading]:
    spec = TableSpec(layout="wide", ts_col="timestamp", home_col="house", tz="Europe/London",
                     skip_flag_col="aggregate_missing",
                     device_cols=parse_device_cols(
                         "aggregate_w=mains:meter,kettle_w=kettle,dishwasher_w=dishwasher,"
                         "washing_machine_w=washing_machine,microwave_w=microwave"))
    frame = readings_frame(REFIT, spec)
    shift = end - frame["ts"].max()
    shift = timedelta(minutes=shift // timedelta(minutes=1))  # keep the original minute alignment
    return frame_to_readings(frame.with_columns(pl.lit(OWN_HOME).alias("home_id"),
                                                pl.col("ts") + shift))


def simulated_readings(start: datetime, end: datetime, step_s: int = 60) -> list[Reading]:
    home = make_homes(1)[0]
    assert home.home_id == OTHER_HOME
    out: list[Reading] = []
    t = start
    while t < end:
        out.extend(home.readings_at(t))
        t += timedelta(seconds=step_s)
    return out


def _time_sliced(readings: list[Reading], minutes: int = 5) -> list[list[Reading]]:
    """Batches of a few minutes each. Within one batch the flow windows each device's readings in
    one go, so a home's meter minutes can reach the home aggregator after its appliances' newer
    ones; beyond the aggregator's retention (10 minutes) they would be dropped as late (a
    limitation of the import path with multi-device homes, reported to the lead)."""
    step = timedelta(minutes=minutes)
    start = min(r.ts for r in readings)
    slices: dict[int, list[Reading]] = {}
    for r in sorted(readings, key=lambda r: r.ts):
        slices.setdefault((r.ts - start) // step, []).append(r)
    return [slices[k] for k in sorted(slices)]


def seed(url: str, now: datetime | None = None, sim_days: float = 2.0) -> Seeded:
    now = now or datetime.now(timezone.utc)
    store = open_store(url)
    store.migrate()
    store.close()
    sim_end = now.replace(second=0, microsecond=0)
    readings = refit_readings(now - timedelta(minutes=20)) + simulated_readings(
        sim_end - timedelta(days=sim_days), sim_end + timedelta(seconds=30))
    run_import(lambda: iter(_time_sliced(readings)), url,
               meter_home_ids=frozenset({OWN_HOME, OTHER_HOME}))
    made = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    insights = Batch(
        forecasts=[Forecast(home, made, made + timedelta(hours=i), 60, 60 * (i + 1), 400.0 + 5 * i,
                            250.0, 700.0, "test-model") for home in (OWN_HOME, OTHER_HOME)
                   for i in range(24)],
        forecast_scores=[ForecastScore(OWN_HOME, 60, 60 * h, "test-model", 40, 90.0 + h, 130.0,
                                       150.0, 0.8, now) for h in range(1, 25)],
        anomalies=[
            Anomaly(OWN_HOME, "kettle", AnomalyKind.LONG_RUNNING, now - timedelta(hours=1), None,
                    4.0, "The kettle has been on for 20 minutes; it usually runs 3."),
            Anomaly(OTHER_HOME, "fridge", AnomalyKind.LONG_RUNNING, now - timedelta(hours=2), None,
                    5.0, OTHER_ANOMALY),
        ],
        recommendations=[
            Recommendation(OWN_HOME, "", "standby_waste", now, "Cut the always-on load",
                           "Base load 150 W at night; 50 W less saves 36 kWh a month.", 36.0, 10.1,
                           "GBP"),
            Recommendation(OTHER_HOME, "ev", "load_shift", now, OTHER_RECOMMENDATION,
                           "Charging at 02:00 instead of 18:00 saves the peak price difference.",
                           0.0, 12.5, "GBP"),
        ])
    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod

    economy7 = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.TOU, "GBP",
                      "Europe/London", "Economy 7", 0.28,
                      periods=(TouPeriod("night", 30, 7 * 60 + 30, 0.09),))
    store = open_store(url)
    try:
        store.write(insights)
        store.upsert_tariffs(TariffBook("GBP", (economy7,)).to_rows())
    finally:
        store.close()
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    db = Database(url)
    try:
        accounts = Accounts(db)
        accounts.add_user("alice", PASSWORDS["alice"], Role.HOMEOWNER, [OWN_HOME], by="test")
        accounts.add_user("olga", PASSWORDS["olga"], Role.OPERATOR, by="test")
        accounts.add_user("adam", PASSWORDS["adam"], Role.ADMIN, by="test")
    finally:
        db.close()
    return Seeded(url, now)


def viewer_env(url: str, **settings: str) -> dict[str, str]:
    """Environment for a viewer (AppTest or `shems ui`) on this store."""
    env = {"SHEMS_STORE_URL": url, "SHEMS_UI_STALE_AFTER_S": "600"}
    env.update({("SHEMS_UI_" + k.upper() if not k.startswith("SHEMS_") else k): v
                for k, v in settings.items()})
    return env


def apply_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith("SHEMS_UI_") and key not in env:
            monkeypatch.delenv(key)


# ------------------------------------------------------------------------------ hostile names

HOSTILE_HOME = "hostile-home"
PHISH = "[Session expired - sign in again](https://evil.example)"
FETCH = "![x](http://127.0.0.1:9/x.png)"
SCRIPT = "<img src=x onerror=alert(1)>"
FORMULA = "=cmd|' /C calc'!A0"
PLOT_LINK = '<a href="https://evil.example">open</a>'
# Every way a name could turn into markup on a page: markdown link, remote image, raw HTML,
# Plotly's HTML subset, GFM autolinks, LaTeX, Streamlit's colour directive, a heading.
HOSTILE_DEVICES = [PHISH, FETCH, SCRIPT, FORMULA, PLOT_LINK, "www.evil.example",
                   "$\\frac{1}{2}$ :red[alarm] **bold**", "# heading\n- item"]
HOSTILE_COMMAND = "c-hostile0000000"
HOSTILE_PASSWORD = "hana-secret-12"


def seed_hostile(url: str, now: datetime) -> None:
    """A home whose devices call themselves markup, with anomalies, a recommendation, a command
    and a device's answer that repeat it; written straight to the store (as the flow and the
    insight jobs would). Adds homeowner ``hana`` of that home."""
    from pipeline.records import AckStatus, CommandAck, CommandState, DeviceKind, DeviceWindow, HomeWindow

    end = now.replace(second=0, microsecond=0)
    batch = Batch()
    for i in range(90):
        t = end - timedelta(minutes=90 - i)
        batch.readings.append(Reading(HOSTILE_HOME, "mains", t, 900.0, kind=DeviceKind.METER))
        batch.device_windows.append(
            DeviceWindow(HOSTILE_HOME, "mains", DeviceKind.METER, t, 900.0, 900, 900, 15.0, 1))
        batch.home_windows.append(HomeWindow(HOSTILE_HOME, t, 900.0, 900, 900, 15.0, 1))
        for n, device in enumerate(HOSTILE_DEVICES):
            w = 50.0 + 10 * n
            batch.readings.append(Reading(HOSTILE_HOME, device, t, w))
            batch.device_windows.append(
                DeviceWindow(HOSTILE_HOME, device, DeviceKind.APPLIANCE, t, w, w, w, w / 60, 1))
    batch.anomalies += [
        Anomaly(HOSTILE_HOME, PHISH, AnomalyKind.LONG_RUNNING, now - timedelta(minutes=30), None, 4.0,
                f"{PHISH} {FETCH} {SCRIPT}"),
        Anomaly(HOSTILE_HOME, SCRIPT, AnomalyKind.LONG_RUNNING, now - timedelta(hours=3),
                now - timedelta(hours=2), 3.0, FETCH),
    ]
    batch.recommendations.append(Recommendation(HOSTILE_HOME, FETCH, "load_shift", now, PHISH,
                                                f"{SCRIPT} {FETCH}", 3.0, 1.0, "GBP"))
    batch.command_acks.append(CommandAck(HOSTILE_HOME, PHISH, HOSTILE_COMMAND, AckStatus.REJECTED,
                                         CommandState.OFF, now, now, f"{PHISH} {FETCH}"))
    store = open_store(url)
    try:
        store.migrate()
        store.write(batch)
    finally:
        store.close()
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    db = Database(url)
    try:
        db.execute("INSERT INTO device_commands (command_id, home_id, device_id, state, run_at, "
                   "issued_by, issued_at) VALUES (:c, :h, :d, 'off', NULL, 'hana', :at)",
                   {"c": HOSTILE_COMMAND, "h": HOSTILE_HOME, "d": PHISH, "at": now})
        Accounts(db).add_user("hana", HOSTILE_PASSWORD, Role.HOMEOWNER, [HOSTILE_HOME], by="test")
    finally:
        db.close()
