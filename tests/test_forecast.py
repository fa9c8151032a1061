"""HomeForecaster: what it issues and when, DST, restart from a snapshot, state size, and its
own prequential scores, on a real SGSC home (8 weeks, half-hourly) replayed through the flow's
operators."""

from __future__ import annotations

import math
import pickle
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.evaluation.forecast import evaluate_forecasts
from pipeline.evaluation.replay import home_windows, split_homes
from pipeline.ingest.tabular import TableSpec, readings_frame
from pipeline.insights.forecast import ForecastSettings, HomeForecaster
from pipeline.insights.forecast.features import FEATURES
from pipeline.insights.forecast.models import QuantileLinear
from pipeline.insights.forecast.slotting import MinuteSlotter
from pipeline.records import Forecast, ForecastScore, HomeWindow
from tests.conftest import FIXTURES

SGSC = FIXTURES / "sgsc_10006486_8weeks.csv"
SGSC_SPEC = dict(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                 interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")
SETTINGS = ForecastSettings(timezone="Australia/Sydney")


@pytest.fixture(scope="module")
def sgsc_frame():
    return readings_frame(SGSC, TableSpec(**SGSC_SPEC))


@pytest.fixture(scope="module")
def sgsc_windows(sgsc_frame) -> list[HomeWindow]:
    return list(home_windows(split_homes(sgsc_frame)[0][1]))


def run(forecaster: HomeForecaster, windows: list[HomeWindow]) -> list[Forecast | ForecastScore]:
    out = []
    for w in windows:
        out.extend(forecaster.add(w))
    return out


def actuals(windows: list[HomeWindow], res: int) -> dict[datetime, float]:
    slotter = MinuteSlotter((res,), 0.8, 30)
    out = {}
    for w in windows:
        for s in slotter.add(int(w.bucket.timestamp()) // 60, w.mean_power_w):
            if s.value is not None:
                out[datetime.fromtimestamp(s.start_min * 60, timezone.utc)] = s.value
    return out


def hourly_mae(records, truth: dict[datetime, float], until: datetime) -> float:
    """MAE of the hourly forecasts whose target ended before ``until``."""
    errors = [abs(truth[f.target_ts] - f.yhat_w) for f in records
              if isinstance(f, Forecast) and f.resolution_min == 60 and f.target_ts in truth
              and f.target_ts + timedelta(hours=1) <= until]
    assert len(errors) > 1000
    return float(np.mean(errors))


def test_every_hour_it_forecasts_the_next_24_hours_and_96_quarter_hours(sgsc_windows):
    forecaster = HomeForecaster("10006486", SETTINGS)
    issues: dict[datetime, list[Forecast]] = {}
    published: list[datetime] = []
    for w in sgsc_windows[: 2 * 24 * 10]:  # ten days of half-hours
        out = forecaster.add(w)
        if out:
            published.append(w.bucket)
        for item in out:
            if isinstance(item, Forecast):
                # made at the hour boundary, published at the home's minute of the hour (a
                # half-hourly meter's first reading at or after it)
                assert item.made_at == w.bucket.replace(minute=0)
                assert w.bucket - item.made_at <= timedelta(minutes=30)
                issues.setdefault(item.made_at, []).append(item)
    assert len(published) == len({p.replace(minute=0) for p in published})  # once an hour
    assert len(issues) >= 24 * 10 - 2
    for made_at, forecasts in issues.items():
        for res, count in ((60, 24), (15, 96)):
            got = sorted((f for f in forecasts if f.resolution_min == res), key=lambda f: f.target_ts)
            assert [f.target_ts for f in got] == [made_at + timedelta(minutes=res * k) for k in range(count)]
            assert [f.horizon_min for f in got] == [res * (k + 1) for k in range(count)]
            assert all(f.lower_w <= f.yhat_w <= f.upper_w and f.lower_w >= 0 for f in got)
            assert {f.model for f in got} <= {"profile_median", "river_quantile_linear", "blend", "profile_typed"}


def test_the_hourly_work_is_spread_over_the_hour_and_changes_no_forecast(sgsc_windows):
    """Homes publish at different minutes of the hour (so a worker's homes do not all stall the
    stream in one minute), yet each forecast is the one it would have issued at the boundary."""
    delays = {HomeForecaster(f"home-{i}", SETTINGS).issue_delay_min for i in range(400)}
    assert delays == set(range(SETTINGS.issue_spread_min + 1))
    at_boundary = ForecastSettings(timezone=SETTINGS.timezone, issue_spread_min=0)
    home = next(f"home-{i}" for i in range(100)
                if 0 < HomeForecaster(f"home-{i}", SETTINGS).issue_delay_min)
    days = [HomeWindow(home, w.bucket, w.mean_power_w, w.min_power_w, w.max_power_w, w.energy_wh,
                       w.samples) for w in sgsc_windows[: 2 * 24 * 12]]
    staggered = run(HomeForecaster(home, SETTINGS), days)
    prompt = run(HomeForecaster(home, at_boundary), days)
    assert len(staggered) > 10_000
    # the stagger may hold back the last hour of the slice; nothing else differs
    assert staggered == prompt[:len(staggered)] and len(prompt) - len(staggered) <= 24 + 96 + 9


CUT = 2 * 24 * 28  # four weeks of half-hours


@pytest.fixture(scope="module")
def full_run(sgsc_windows):
    """The whole slice through one forecaster, with a snapshot taken at the cut."""
    forecaster = HomeForecaster("10006486", SETTINGS)
    before = run(forecaster, sgsc_windows[:CUT])
    snapshot = pickle.dumps(forecaster)
    after = run(forecaster, sgsc_windows[CUT:])
    return before + after, snapshot, after, forecaster


def test_scores_are_emitted_each_hour_for_the_bounded_horizons(full_run):
    out = full_run[0]
    hours = sorted({r.updated_at for r in out if isinstance(r, ForecastScore)})
    # One batch every hour, once the weekly baseline exists (after the first week).
    assert len(hours) == (hours[-1] - hours[0]) / timedelta(hours=1) + 1 > 24 * 45
    scores = {(r.resolution_min, r.horizon_min): r for r in out
              if isinstance(r, ForecastScore) and r.updated_at == hours[-1]}
    assert set(scores) == {(60, 60), (60, 360), (60, 720), (60, 1440),
                           (15, 15), (15, 60), (15, 360), (15, 720), (15, 1440)}
    assert all(s.n > 1000 and 0.6 <= s.coverage <= 0.95 and s.mae_w > 0 for s in scores.values())
    assert all(s.mae_w < min(s.naive_day_mae_w, s.naive_week_mae_w) for s in scores.values())


def test_its_own_prequential_scores_agree_with_the_evaluation(sgsc_frame, full_run):
    final = {(r.resolution_min, r.horizon_min): r for r in full_run[0] if isinstance(r, ForecastScore)}
    evaluation = evaluate_forecasts(sgsc_frame, SETTINGS)
    assert len(evaluation.rows) == 9
    for row in evaluation.rows:
        own = final[(row.resolution, int(row.horizon_h * 60))]
        assert own.n == row.n
        assert math.isclose(own.mae_w, row.mae, rel_tol=1e-4)  # issued values kept as float32
        assert math.isclose(own.naive_day_mae_w, row.naive_day_mae, rel_tol=1e-9)
        assert math.isclose(own.naive_week_mae_w, row.naive_week_mae, rel_tol=1e-9)
        assert math.isclose(own.coverage, row.coverage_80, abs_tol=1e-3)


def test_a_restored_snapshot_continues_identically_and_keeps_what_it_learned(sgsc_windows, full_run):
    _, snapshot, after_whole, _ = full_run
    restored = pickle.loads(snapshot)
    days = sgsc_windows[CUT:CUT + 2 * 24 * 3]
    after_restored = run(restored, days)
    assert after_restored == after_whole[:len(after_restored)]
    # An untrained forecaster started at the cut (what a restart without its state would be)
    # is clearly worse over the next three days, all hourly horizons.
    fresh = run(HomeForecaster("10006486", SETTINGS), days)
    truth = actuals(sgsc_windows, 60)
    until = days[-1].bucket
    kept, untrained = hourly_mae(after_restored, truth, until), hourly_mae(fresh, truth, until)
    assert kept < 0.8 * untrained, (kept, untrained)


def test_state_stays_under_50_kb(full_run):
    size = len(pickle.dumps(full_run[3]))  # 8 weeks: every history ring and window is full
    assert size < 50_000, size


def test_the_profile_follows_the_local_clock_across_the_spring_dst_change():
    """A home that cooks at 18:00 local every day: after the clocks go forward the peak moves to
    17:00 UTC, and so must the day-ahead forecast, at once (not after weeks of history)."""
    tz = "Europe/London"
    settings = ForecastSettings(timezone=tz)
    forecaster = HomeForecaster("uk", settings)
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    start = datetime(2014, 3, 2, tzinfo=timezone.utc)
    forecasts = []
    for m in range(0, 60 * 24 * 33, 5):  # a reading every 5 minutes to 2014-04-04
        at = start + timedelta(minutes=m)
        peak = at.astimezone(zone).hour == 18
        out = forecaster.add(HomeWindow("uk", at, 2000.0 if peak else 200.0, 0, 0, 0, 1))
        forecasts += [f for f in out if isinstance(f, Forecast) and f.resolution_min == 60
                      and f.horizon_min == 1440 and f.made_at >= datetime(2014, 3, 31, tzinfo=timezone.utc)]
    assert forecasts
    for f in forecasts:
        local_hour = f.target_ts.astimezone(zone).hour
        if local_hour == 18:
            assert f.yhat_w > 1500, f
        else:
            assert f.yhat_w < 700, f


def test_batch_prediction_is_rivers_predict_one():
    model = QuantileLinear(0.03, 1e-4)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, len(FEATURES)))
    model.learn(x, rng.normal(size=50))
    batch = model.predict(x)
    one = [model.model.predict_one(dict(zip(FEATURES, row))) for row in x.tolist()]
    assert np.allclose(batch, one) and np.std(batch) > 0


@pytest.mark.parametrize("bad", [dict(timezone="Mars/Olympus"), dict(resolutions=(7,)),
                                 dict(min_coverage=0), dict(history_days=5), dict(horizon_hours=48)])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValueError):
        ForecastSettings(**bad)
