"""``shems evaluate`` and the evaluation behind it, on real slices: the model beats both
seasonal-naive baselines, stuck runs are not scored, gaps are gaps, and the CLI's JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.evaluation.forecast import DAY_AHEAD_H, evaluate_forecasts
from pipeline.evaluation.stuck_runs import StuckRule, excluded_slots, stuck_runs
from pipeline.ingest.tabular import TableSpec, parse_device_cols, readings_frame
from pipeline.insights.forecast import ForecastSettings
from tests.conftest import FIXTURES

SGSC = FIXTURES / "sgsc_10006486_8weeks.csv"
SGSC_ARGS = ["--layout", "interval", "--ts-col", "reading_datetime", "--home-col", "customer_id",
             "--interval-kwh", "general_supply_kwh", "--tz", "Australia/Brisbane",
             "--home-tz", "Australia/Sydney"]
HELD = FIXTURES / "refit_house2_held_value_wide.csv"


def shems(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def sgsc_evaluation():
    spec = TableSpec(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")
    return evaluate_forecasts(readings_frame(SGSC, spec), ForecastSettings(timezone="Australia/Sydney"))


def test_the_model_beats_both_seasonal_naive_baselines_on_a_real_home(sgsc_evaluation):
    rows = {(r.resolution, r.horizon_h): r for r in sgsc_evaluation.rows}
    day_ahead = rows[(60, DAY_AHEAD_H)]
    # Eight winter weeks of one SGSC home (measured 0.70): the acceptance target is 0.80 of the
    # better naive MAE a day ahead; the next hour must do better still (measured 0.65).
    assert day_ahead.n > 1000 and day_ahead.skill <= 0.80, day_ahead
    assert rows[(60, 1)].skill <= 0.75 and rows[(15, 0.25)].skill <= 0.75
    assert all(r.skill < 1 for r in sgsc_evaluation.rows)
    assert all(0.72 <= r.coverage_80 <= 0.88 for r in sgsc_evaluation.rows)
    assert all(r.rmse >= r.mae > 0 and 0 < r.mape < 200 for r in sgsc_evaluation.rows)
    home = sgsc_evaluation.homes[0]
    assert home.model_bytes < 50_000 and home.stuck_runs == 0  # quiet nights are not "stuck"
    assert len(home.winners) == 10 and all("=" in w for w in home.winners)


def test_a_held_value_in_real_refit_data_is_found_and_its_slots_are_not_scored():
    spec = TableSpec(layout="wide", ts_col="timestamp", home_col="house", tz="Europe/London",
                     device_cols=parse_device_cols("aggregate_w=mains:meter"))
    frame = readings_frame(HELD, spec)
    runs = stuck_runs(frame, StuckRule())
    # REFIT's PROVENANCE: House 2 holds 84 W from 2014-08-30 12:05:30 local (11:05:30 UTC).
    assert len(runs) == 1
    run = runs[0]
    assert run.power_w == 84.0 and run.start == datetime(2014, 8, 30, 11, 5, 30, tzinfo=timezone.utc)
    assert run.samples == 229 and run.end == datetime(2014, 8, 30, 12, 59, 30, tzinfo=timezone.utc)  # to the end of the slice
    hours = excluded_slots(runs, 60, timedelta(seconds=30))
    assert hours == {int(datetime(2014, 8, 30, h, tzinfo=timezone.utc).timestamp()) // 60 for h in (11, 12)}
    # The same values, not quite an hour of them: not stuck.
    assert stuck_runs(frame.filter(pl.col("ts") < datetime(2014, 8, 30, 12, tzinfo=timezone.utc)), StuckRule()) == []


def test_a_long_format_file_with_a_gap_is_scored_around_the_gap(tmp_path, sgsc_evaluation):
    raw = pl.read_csv(SGSC, try_parse_dates=True)
    gap = (datetime(2013, 7, 1), datetime(2013, 7, 4))
    long = raw.filter(~pl.col("reading_datetime").is_between(*gap, closed="left")).select(
        pl.col("reading_datetime").dt.strftime("%Y-%m-%dT%H:%M:%S+10:00").alias("ts"),
        pl.col("customer_id").cast(pl.Utf8).alias("home_id"),
        pl.lit("mains").alias("device_id"),
        pl.lit("meter").alias("kind"),
        (pl.col("general_supply_kwh") * 2000).alias("power_w"))
    path = tmp_path / "long_with_gap.csv"
    long.write_csv(path)
    proc = shems("evaluate", str(path), "--home-tz", "Australia/Sydney", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    day_ahead = next(r for r in result["forecast"] if r["resolution"] == 60 and r["horizon_h"] == 24)
    full = next(r for r in sgsc_evaluation.rows if r.resolution == 60 and r.horizon_h == 24)
    # Three days are gone, and with them the targets whose actual or baselines fell in the gap.
    assert full.n - 24 * (3 + 3 + 3) <= day_ahead["n"] <= full.n - 24 * 3
    assert day_ahead["skill"] < 0.85


def test_cli_json_line_has_the_agreed_schema():
    proc = shems("evaluate", str(SGSC), *SGSC_ARGS, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) >= {"forecast", "anomaly", "model_bytes_per_home"}
    # Faults were injected into the home's real series and the flow's detectors looked for them.
    anomaly = {r["kind"]: r for r in result["anomaly"]}
    assert set(anomaly) == {"high_consumption", "flat_line", "silent", "counter_backwards"}
    for r in anomaly.values():
        assert r["injected"] > 0 and 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["precision"] <= 1.0
    assert anomaly["silent"]["recall"] == 1.0 and anomaly["counter_backwards"]["recall"] == 1.0
    assert "Anomalies: faults injected" in proc.stderr
    assert 0 < result["model_bytes_per_home"]["10006486"] < 50_000
    rows = result["forecast"]
    assert {(r["resolution"], r["horizon_h"]) for r in rows} == {
        (60, 1.0), (60, 6.0), (60, 12.0), (60, 24.0), (15, 0.25), (15, 1.0), (15, 6.0), (15, 12.0), (15, 24.0)}
    for r in rows:
        assert set(r) >= {"home_id", "resolution", "horizon_h", "mae", "rmse", "mape", "naive_day_mae",
                          "naive_week_mae", "skill", "coverage_80"}
        assert r["skill"] == pytest.approx(r["mae"] / min(r["naive_day_mae"], r["naive_week_mae"]))
    assert "day-ahead" in proc.stderr and "Forecasts" in proc.stderr  # the tables go to stderr


def test_no_anomalies_scores_the_forecasts_only():
    proc = shems("evaluate", str(SGSC), *SGSC_ARGS, "--no-anomalies", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["anomaly"] == [] and result["forecast"]
    assert "Anomalies" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--horizons", "30"], "horizons must be hours in (0, 24]"),
    (["--horizons", "one"], "expected hours separated by commas"),
    (["--home-tz", "Mars/Olympus"], "unknown time zone"),
    (["--homes", "nobody"], "no readings for home(s) nobody"),
    (["--jobs", "0"], "expected a whole number > 0"),
])
def test_bad_evaluate_arguments_exit_nonzero_with_a_reason(args, message):
    proc = shems("evaluate", str(SGSC), *SGSC_ARGS, *args)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_a_missing_file_is_a_clear_error():
    proc = shems("evaluate", "/nonexistent/file.parquet")
    assert proc.returncode == 2 and "no such file" in proc.stderr
