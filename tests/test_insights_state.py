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
