"""A home's insights state: what it holds, and what it costs per home at fleet scale."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.energy.tariff import book_from_toml
from pipeline.insights.step import HomeInsights
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow

DEMO_TARIFFS = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "demo_tariffs.toml"
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def feed(insights: HomeInsights, book, minutes: int = 180) -> list:
    out = []
    for m in range(minutes):
        bucket = T0 + timedelta(minutes=m)
        power = 300.0 + (m % 60) * 10
        out += insights.add(DeviceWindow("h1", "kettle", DeviceKind.APPLIANCE, bucket, power, power,
                                         power, power / 60, 2), book)
        out += insights.add(HomeWindow("h1", bucket, power, power, power, power / 60, 2), book)
    return out


def test_without_a_tariff_no_recommender_state_is_kept():
    insights = HomeInsights("h1", "Europe/London")
    out = feed(insights, None)
    assert insights.recommender is None
    assert any(type(x).__name__ == "Forecast" for x in out)  # it still forecasts
    assert len(pickle.dumps(insights)) < 60_000  # the forecaster (~40 KB) and the detectors


def test_a_tariff_makes_the_recommender_and_it_survives_pickling():
    book = book_from_toml(DEMO_TARIFFS)
    insights = HomeInsights("h1", "Europe/London")
    feed(insights, book)
    assert insights.recommender is not None
    restored = pickle.loads(pickle.dumps(insights))
    assert restored.recommender is not None and restored.recommender.home_id == "h1"


# ------------------------------------------------------------------ size and exact round trips

def thirty_day_home(days: int = 30) -> tuple[HomeInsights, list, list]:
    """A home of 5 devices under the demo tariff fed ``days`` days of the bench's windows (the
    bundled REFIT day, shifted per day): the state, its windows and what it emitted."""
    from pipeline.tools.bench_state import TIMEZONE, _sample_day, home_windows

    book = book_from_toml(DEMO_TARIFFS)
    windows = home_windows(0, days, _sample_day())
    insights = HomeInsights(windows[0].home_id, TIMEZONE)
    out = [x for w in windows for x in insights.add(w, book)]
    return insights, windows, out


def test_a_30_day_home_with_5_devices_and_a_tariff_snapshots_in_under_40_kb():
    insights, _, out = thirty_day_home()
    kinds = {type(x).__name__ for x in out}
    assert {"Forecast", "ForecastScore", "Recommendation"} <= kinds  # every model has learned
    assert len(insights.device_detectors) == 5 and insights.recommender is not None
    snapshot = pickle.dumps(insights)
    assert len(snapshot) < 40_000, len(snapshot)  # 217,548 bytes before the compact layout


def test_a_state_restored_from_its_snapshot_at_any_minute_gives_the_same_outputs():
    """Snapshots at odd minutes (mid-hour, at the issue minute, across the daily evaluation),
    each restored and fed on: the outputs are those of the state that was never pickled."""
    from pipeline.tools.bench_state import TIMEZONE, _sample_day, home_windows

    book = book_from_toml(DEMO_TARIFFS)
    windows = home_windows(1, 10, _sample_day())
    straight = HomeInsights(windows[0].home_id, TIMEZONE)
    expected = [straight.add(w, book) for w in windows]
    restored = HomeInsights(windows[0].home_id, TIMEZONE)
    got = []
    for i, w in enumerate(windows):
        if i % 2_377 == 0:  # 2,377 windows: about 6.6 hours, never the same minute of the hour
            restored = pickle.loads(pickle.dumps(restored))
        got.append(restored.add(w, book))
    kinds = {type(x).__name__ for out in expected for x in out}
    assert {"Forecast", "ForecastScore", "Recommendation"} <= kinds, kinds
    assert got == expected


def test_rings_pickled_with_their_tag_column_load_with_the_same_hours():
    """Hourly rings of snapshots from before the compact layout (a tag per slot) read the same."""
    from array import array

    import numpy as np

    from pipeline.insights.recommend.history import HourRings

    ring = HourRings(48, energy="f", minutes="B")
    tags = array("i", [-1]) * 48
    energy, minutes = array("f", [0.0]) * 48, array("B", [0]) * 48
    for hour in [*range(100, 130), *range(140, 150)]:  # a gap of ten hours, then a wrap
        ring.add(hour, energy=hour * 1.5, minutes=60)
        tags[hour % 48], energy[hour % 48], minutes[hour % 48] = hour, hour * 1.5, 60
    old = HourRings.__new__(HourRings)
    old.__setstate__((None, {"tags": tags, "columns": {"energy": energy, "minutes": minutes}}))
    for name in ("energy", "minutes"):
        np.testing.assert_array_equal(old.window(name, 90, 70), ring.window(name, 90, 70))
    assert np.isnan(ring.window("energy", 131, 1)[0]) and ring.window("energy", 149, 1)[0] == 149 * 1.5


def test_rolling_quantiles_restore_river_state_bit_for_bit():
    import random

    from river import stats

    from pipeline.insights.anomaly.rolling import RollingQuantile, compact

    rng = random.Random(7)
    for n, window in ((0, 4), (3, 28), (500, 336)):
        river, ours = stats.RollingQuantile(q=0.9, window_size=window), RollingQuantile(q=0.9, window_size=window)
        for _ in range(n):
            x = rng.random() * 1000
            river.update(x)
            ours.update(x)
        restored = pickle.loads(pickle.dumps(ours))
        assert restored._rolling_quantile.__getstate__() == river._rolling_quantile.__getstate__()
        assert len(pickle.dumps(ours)) < len(pickle.dumps(river)) * 0.6 + 100
        assert compact(pickle.loads(pickle.dumps(river))).get() == river.get()
