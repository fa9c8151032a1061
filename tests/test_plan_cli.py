"""`shems plan`: loads from options or TOML, prices from a tariff book or a price file, base load
flat or from a stored forecast; the table, the JSON, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "deploy" / "tariffs.example.toml"
UTC = timezone.utc


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")  # rich wraps at the terminal width; keep lines whole


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_dishwasher_and_washer_move_into_the_night_rate(capsys):
    # 2024-06-05 is a Wednesday on the example book's Economy 7 with a weekday 16-19 h peak.
    code, out, _ = run(capsys, "--tariffs", str(BOOK), "--date", "2024-06-05", "--base-load-w", "300",
                       "--load", "dishwasher,1.2,2,19:00,07:00", "--load", "washer,0.9,1.5,17:00,08:00",
                       "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["currency"] == "GBP"
    night_start = datetime(2024, 6, 5, 23, 30, tzinfo=UTC)  # 00:30 BST on Thursday
    night_end = datetime(2024, 6, 6, 6, 30, tzinfo=UTC)  # 07:30 BST
    for load in plan["loads"]:
        assert night_start <= datetime.fromisoformat(load["start"])
        assert datetime.fromisoformat(load["end"]) <= night_end
    # Both would start in the day rate (19:00) or the peak (17:00): 1.2 x (0.28 - 0.09) +
    # 0.9 x (0.38 - 0.09) of saving, with the base load costing the same either way.
    assert plan["saving"] == pytest.approx(1.2 * 0.19 + 0.9 * 0.29)
    code, out, _ = run(capsys, "--tariffs", str(BOOK), "--date", "2024-06-05",
                       "--load", "dishwasher,1.2,2,19:00,07:00")
    assert code == 0
    assert "dishwasher" in out and "saving 0.23 GBP (68%)" in out
    row = next(line for line in out.splitlines() if "dishwasher" in line)
    assert re.search(r"Wed 19:00–Thu 07:00 │ Thu 0[0-5]:[0-5][05] │ Thu 0[2-7]:[0-5][05] │ 0.11 │ +0.34", row), row


def test_loads_file_power_limit_and_interruptible_ev(capsys, tmp_path: Path):
    loads = tmp_path / "loads.toml"
    loads.write_text("""
[[load]]
name = "ev"
power_w = 7000
hours = 3
earliest = "18:00"
deadline = "07:00"
interruptible = true

[[load]]
name = "boiler"
energy_kwh = 3
hours = 1
earliest = "2024-06-06T00:00:00+01:00"
deadline = "2024-06-06T06:00:00+01:00"
""")
    code, out, _ = run(capsys, "--tariffs", str(BOOK), "--date", "2024-06-05", "--loads", str(loads),
                       "--base-load-w", "500", "--power-limit-w", "8000", "--slot-minutes", "60", "--json")
    assert code == 0, out
    plan = json.loads(out)
    ev, boiler = plan["loads"]
    ev_slots = {datetime.fromisoformat(s) for s in ev["slots"]}
    boiler_slots = {datetime.fromisoformat(s) for s in boiler["slots"]}
    assert len(ev_slots) == 3 and not ev_slots & boiler_slots  # 7 + 3 kW + base > 8 kW together
    assert plan["peak_w"] <= 8000
    # Base load 18:00-07:00 BST on hourly slots priced at their start (00:00-01:00 is still the day
    # rate): one peak hour, six day-rate hours, six night hours; all load energy at the night rate.
    assert plan["cost"] == pytest.approx(0.5 * (0.38 + 6 * 0.28 + 6 * 0.09) + 24 * 0.09)
    assert ev["cost"] == pytest.approx(21 * 0.09) and boiler["cost"] == pytest.approx(3 * 0.09)


def test_price_file_instead_of_a_book(capsys, tmp_path: Path):
    prices = tmp_path / "prices.csv"
    start = datetime(2024, 1, 10, tzinfo=UTC)
    rows = [(start + timedelta(minutes=30 * i), 0.30 if i != 7 else 0.02) for i in range(48)]
    prices.write_text("ts,import_price\n" + "".join(f"{t.isoformat()},{p}\n" for t, p in rows))
    code, out, _ = run(capsys, "--prices", str(prices), "--currency", "EUR", "--tz", "UTC",
                       "--date", "2024-01-10", "--load", "heater,1,0.5,00:00,12:00", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["currency"] == "EUR"
    assert plan["loads"][0]["start"] == "2024-01-10T03:30:00+00:00"
    assert plan["saving"] == pytest.approx(0.28)


@pytest.mark.parametrize("argv, message", [
    (["--tariffs", str(BOOK)], "nothing to plan"),
    (["--load", "dw,1,2,19:00,07:00"], "no prices: give --tariffs FILE"),
    (["--tariffs", str(BOOK), "--prices", str(REPO / "deploy" / "prices.example.csv"),
      "--load", "dw,1,2,19:00,07:00"], "give --tariffs or --prices, not both"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2"], "expected name,kwh,hours,earliest,deadline"),
    (["--tariffs", str(BOOK), "--load", "dw,-1,2,19:00,07:00"], "kwh must be a number > 0"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2,7pm,07:00"], "is not HH:MM or an ISO date-time"),
    (["--tariffs", str(BOOK), "--load", "dw,1,3,19:00,21:00", "--date", "2024-06-05"],
     "'dw' \\(3 h\\) does not fit between its earliest start 2024-06-05 19:00 BST"),
    (["--tariffs", str(BOOK), "--load", "kiln,9,1,19:00,23:00", "--date", "2024-06-05",
      "--base-load-w", "500", "--power-limit-w", "7000"], "'kiln' \\(9,000 W\\) never fits under the 7,000 W"),
    (["--tariffs", "/nonexistent.toml", "--load", "dw,1,2,19:00,07:00"], "no such file: /nonexistent.toml"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2,19:00,07:00", "--slot-minutes", "20"],
     "slot must be 15, 30 or 60"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2,19:00,07:00", "--date", "2012-06-05"],
     "no tariff in effect for home '\\*' at 2012-06-05"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2,19:00,07:00", "--store-url", "sqlite:////nonexistent/x.db",
      "--home", "h"], "no SQLite store at /nonexistent/x.db"),
    (["--tariffs", str(BOOK), "--load", "dw,1,2,19:00,07:00", "--store-url", "sqlite:////nonexistent/x.db"],
     "--store-url reads a home's forecast: give --home too"),
])
def test_bad_arguments_exit_non_zero_with_a_clear_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert re.search(message, err), err


def test_bad_loads_file(capsys, tmp_path: Path):
    loads = tmp_path / "loads.toml"
    loads.write_text('[[load]]\nname = "dw"\nhours = 2\nearliest = "19:00"\ndeadline = "07:00"\n')
    code, _, err = run(capsys, "--tariffs", str(BOOK), "--loads", str(loads))
    assert code == 2 and "give either energy_kwh or power_w" in err


def test_console_script_exit_code():
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "plan", "--tariffs", str(BOOK),
                             "--load", "dw,1,3,19:00,20:00", "--date", "2024-06-05"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "shems: error: load 'dw' (3 h) does not fit" in result.stderr


def test_base_load_from_the_stores_newest_forecast(capsys, sqlite_url):
    """Runs once the store has the forecasts table (the lead's store branch); skipped before."""
    from sinks.base import Batch
    from sinks.stores import open_store

    if "forecasts" not in Batch.__dataclass_fields__:
        pytest.skip("this branch's store has no forecasts table yet")
    from pipeline.records import Forecast

    store = open_store(sqlite_url)
    store.migrate()
    made = datetime(2024, 6, 5, 17, tzinfo=UTC)
    # 300 W all evening except 5 kW from 23:30 to 00:15 UTC, just as the night rate starts (00:30
    # BST): a 3 kW heater under a 7 kW limit cannot run then, and a night-rate hour that avoids
    # it does not end by the 02:00 BST deadline, so the heater has to run at the day rate.
    rows = [Forecast("h1", made, made + timedelta(minutes=15 * i), 15, 15 * (i + 1),
                     5000.0 if 26 <= i < 29 else 300.0, 0.0, 0.0, "test") for i in range(96)]
    store.write(Batch(forecasts=rows))
    store.close()
    heater = ("--date", "2024-06-05", "--load", "heater,3,1,22:00,02:00", "--power-limit-w", "7000", "--json")
    code, out, err = run(capsys, "--tariffs", str(BOOK), "--home", "h1", "--store-url", sqlite_url, *heater)
    assert code == 0, err
    plan = json.loads(out)
    assert datetime.fromisoformat(plan["loads"][0]["end"]) <= datetime(2024, 6, 5, 23, 30, tzinfo=UTC)
    assert plan["loads"][0]["cost"] == pytest.approx(3 * 0.28)
    assert plan["peak_w"] <= 7000
    # With a flat 300 W instead of the forecast the heater takes the night rate.
    code, out, _ = run(capsys, "--tariffs", str(BOOK), "--base-load-w", "300", *heater)
    assert json.loads(out)["loads"][0]["cost"] == pytest.approx(3 * 0.09)
    code, _, err = run(capsys, "--tariffs", str(BOOK), "--home", "other", "--store-url", sqlite_url,
                       "--load", "heater,3,1,23:00,01:30")
    assert code == 2 and "no forecast rows for this home" in err


def test_load_times_resolve_in_local_time_across_daylight_saving():
    from datetime import date
    from zoneinfo import ZoneInfo

    from pipeline.energy.plan_input import LoadSpec, horizon, resolve_loads

    london = ZoneInfo("Europe/London")
    [night] = resolve_loads([LoadSpec("dw", 2, "01:30", "07:00", energy_kwh=1)], date(2024, 3, 31), "Europe/London")
    assert night.earliest.astimezone(london).hour == 2  # 01:30 does not exist that night: 02:30 BST
    assert night.deadline == datetime(2024, 3, 31, 6, tzinfo=UTC)  # 07:00 BST
    [evening] = resolve_loads([LoadSpec("ev", 3, "19:00", "07:00", power_w=7000, interruptible=True)],
                              date(2024, 10, 26), "Europe/London")
    assert evening.earliest == datetime(2024, 10, 26, 18, tzinfo=UTC)  # 19:00 BST
    assert evening.deadline == datetime(2024, 10, 27, 7, tzinfo=UTC)  # next day, 07:00 GMT
    assert evening.interruptible and evening.power_w == 7000
    start, slots = horizon((night, evening), timedelta(minutes=15))
    assert start == datetime(2024, 3, 31, 1, 30, tzinfo=UTC) and start + slots * timedelta(minutes=15) == evening.deadline
