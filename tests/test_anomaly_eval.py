"""The anomaly evaluation behind ``shems evaluate``: faults injected into real SGSC homes, the same
result whether homes are evaluated one after another or in parallel processes (the CLI's
``--jobs``), and the JSON line carries it."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from pipeline.evaluation.anomaly import real_high_episodes, run_evaluation
from pipeline.evaluation.anomaly_series import DeviceSeries
from pipeline.ingest.tabular import TableSpec, readings_frame
from pipeline.insights.anomaly.settings import DAY, HOUR
from pipeline.records import DeviceKind
from tests.conftest import FIXTURES
from tests.test_forecast_eval import shems

SIX_HOMES = FIXTURES / "sgsc_6homes_10weeks.parquet"
SPEC_ARGS = ["--layout", "interval", "--ts-col", "reading_datetime", "--home-col", "customer_id",
             "--interval-kwh", "general_supply_kwh", "--tz", "Australia/Brisbane"]


@pytest.fixture(scope="module")
def six_homes():
    spec = TableSpec(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")
    return readings_frame(SIX_HOMES, spec)


@pytest.fixture(scope="module")
def in_sequence(six_homes):
    return run_evaluation(six_homes, seed=3, tz="Australia/Brisbane", workers=1)


def test_faults_are_written_into_every_home_and_scored_per_kind(in_sequence):
    assert in_sequence.homes == 6
    assert len({f.home_id for f in in_sequence.injected}) == 6
    by_kind = {r.kind: r for r in in_sequence.rows}
    assert set(by_kind) == {"high_consumption", "flat_line", "silent", "counter_backwards"}
    for row in by_kind.values():
        assert row.injected >= 6  # at least one fault of each kind per home
        assert row.found <= row.injected and row.true_positives <= row.detected
    # A dropout of hours on a half-hourly meter and a counter reset are the clearest faults.
    assert by_kind["silent"].recall == 1.0 and by_kind["counter_backwards"].recall >= 0.9
    # An injected load carries its energy over the whole half hour of each reading (it once got
    # only the windower's 15-minute hold, half its energy, and recall fell to 0.09), and a stuck
    # value lasts longer than a quiet night of identical half-hour readings.
    assert by_kind["high_consumption"].recall >= 0.8 and by_kind["high_consumption"].precision >= 0.8
    assert by_kind["flat_line"].recall >= 0.9
    # The one-sample counter glitches written as traps did not alert.
    assert in_sequence.glitches > 0 and by_kind["counter_backwards"].false_positives == 0


def test_the_cli_in_parallel_processes_gives_the_same_rows(in_sequence):
    # --jobs 2 once hung: forked workers inherited polars' thread-pool locks mid-use.
    proc = shems("evaluate", str(SIX_HOMES), *SPEC_ARGS, "--seed", "3", "--jobs", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    got = {r["kind"]: (r["injected"], r["found"], r["detected"], r["false_positives"])
           for r in result["anomaly"]}
    assert got == {r.kind: (r.injected, r.found, r.detected, r.false_positives) for r in in_sequence.rows}


def test_real_high_episodes_are_found_offline_by_the_injected_load_rule():
    """A home at 200 W, 300 W from 18:00 to 21:00, for 30 days; then one evening at 3 kW for two
    hours (a real episode), one at 3 kW for a single hour (a peak, not an episode)."""
    start = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    ts = np.arange(start, start + 30 * DAY, 60.0)
    hour = (ts % DAY) // HOUR
    power = np.where((hour >= 18) & (hour < 21), 300.0, 200.0)
    two_hours = start + 20 * DAY + 19 * HOUR
    one_hour = start + 25 * DAY + 19 * HOUR
    power[(ts >= two_hours) & (ts < two_hours + 2 * HOUR)] = 3000.0
    power[(ts >= one_hour) & (ts < one_hour + HOUR)] = 3000.0
    meter = DeviceSeries("h", "mains", DeviceKind.METER, (ts * 1e6).astype(np.int64), power)
    episodes = real_high_episodes(meter, "UTC")
    assert [(a, b) for a, b, _ in episodes] == [(two_hours, two_hours + 2 * HOUR)]
    assert episodes[0][2] == pytest.approx(10.0)  # 3 kW against a usual high of 300 W
