"""Days off in the forecast: public holidays of the home's country (the ``holidays`` package)
count like weekends, the day-type profile reads only what an issue knew, and snapshots from
before the day-type candidate still load."""

from __future__ import annotations

from array import array
from datetime import date, timedelta

import numpy as np
import pytest

from pipeline.insights.forecast import ForecastSettings
from pipeline.insights.forecast.daytypes import DayTypes, country_of
from pipeline.insights.forecast.engine import ResolutionForecaster
from pipeline.insights.forecast.features import day_weights, typed_median
from pipeline.insights.forecast.history import SlotRing
from pipeline.insights.forecast.models import BAND_EDGES, CANDIDATES, Selector


def day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def test_public_holidays_of_the_homes_region_are_days_off():
    qld = DayTypes(country_of("Australia/Brisbane"))
    # 2013-01-26 Australia Day fell on a Saturday; Queensland took Monday the 28th off.
    days = np.array([day_number(date(2013, 1, d)) for d in (25, 26, 27, 28, 29)])
    assert qld.off(days).tolist() == [False, True, True, True, False]
    # Easter Monday 2014 in England; the Tuesday after is a working day.
    eng = DayTypes(country_of("Europe/London"))
    assert eng.off(np.array([day_number(date(2014, 4, 21)), day_number(date(2014, 4, 22))])).tolist() == [True, False]
    # "none" and zones the table does not know: weekends only.
    for code in (country_of("Europe/London", "none"), country_of("Mars/Olympus")):
        assert DayTypes(code).off(np.array([day_number(date(2014, 4, 21))])).tolist() == [False]
    # Regions differ: the Royal Queensland Show day (Wednesday 2013-08-14) is no holiday in Sydney.
    nsw = DayTypes(country_of("Australia/Sydney"))
    ekka = np.array([day_number(date(2013, 8, 14))])
    assert qld.off(ekka).tolist() == [True] and nsw.off(ekka).tolist() == [False]


def test_settings_reject_an_unknown_holiday_country():
    with pytest.raises(ValueError, match="holiday country"):
        ForecastSettings(holiday_country="XX")
    assert ForecastSettings(timezone="Europe/Berlin", holiday_country="DE-BY")


def _day_off_profile(settings: ForecastSettings) -> dict[tuple[date, int], float]:
    """A London home at 200 W, except 10:00-16:00 local on days off (2,000 W), for six weeks up
    to Easter 2014 (Good Friday and Easter Monday off): its day-type profile (the
    ``profile_typed`` candidate) a day ahead for the hours of Easter Monday and the Tuesday."""
    engine = ResolutionForecaster(60, settings)
    off_days = {date(2014, 4, 18)}
    first, monday = date(2014, 3, 9), date(2014, 4, 21)
    for d in range((monday - first).days):
        day = first + timedelta(days=d)
        off = day.weekday() >= 5 or day in off_days
        for hour in range(24):
            engine.history.put(day_number(day) * 24 + hour, 2000.0 if off and 10 <= hour < 16 else 200.0)
    out = {}
    for day in (monday, monday + timedelta(days=1)):
        rows = day_number(day) * 24 + np.arange(24)
        _, same = engine._same_type(rows)
        known = day_number(monday) * 24 - 1  # issued at midnight before Easter Monday
        values = typed_median(engine.history, rows, 24, engine.weights, known, same)
        out.update({(day, h): float(v) for h, v in enumerate(values.tolist())})
    return out


def test_a_public_holiday_is_forecast_like_a_day_off():
    with_holidays = _day_off_profile(ForecastSettings(timezone="Europe/London"))
    weekends_only = _day_off_profile(ForecastSettings(timezone="Europe/London", holiday_country="none"))
    monday, tuesday = date(2014, 4, 21), date(2014, 4, 22)
    assert with_holidays[(monday, 12)] == 2000.0 and with_holidays[(monday, 3)] == 200.0
    assert with_holidays[(tuesday, 12)] == 200.0
    # Without the holiday calendar Easter Monday looks like any working day.
    assert weekends_only[(monday, 12)] == 200.0


def test_the_day_type_profile_reads_nothing_an_issue_did_not_know():
    per_day, days = 24, 56
    ring = SlotRing((days + 1) * per_day)
    rng = np.random.default_rng(0)
    last = 60 * per_day
    for row in range(last - (days + 1) * per_day + 1, last + 1):
        ring.put(row, float(rng.uniform(100, 1000)))
    target = np.array([last])
    known = last - per_day  # a day-ahead issue knew up to the same slot yesterday
    weights = day_weights(days, 7.0)
    same = np.ones((1, days), dtype=bool)
    before = typed_median(ring, target, per_day, weights, known, same)
    # Whatever came after the issue (the hours since, the target itself) changes nothing.
    for row in range(known + 1, last + 1):
        ring.put(row, 1e6)
    assert typed_median(ring, target, per_day, weights, known, same).tolist() == before.tolist()
    # The slot after yesterday's is known to a later issue but left out for every horizon, so a
    # forecast revisited at maturity reads the same history as when issued.
    assert typed_median(ring, target, per_day, weights, known + 1, same).tolist() == before.tolist()
    assert np.isfinite(before).all()


def test_a_selector_from_before_the_day_type_candidate_loads_and_keeps_its_choices():
    old = len(CANDIDATES) - 1
    errors = array("f", [0.3, 0.2, 0.25] * len(BAND_EDGES))
    assert len(errors) == old * len(BAND_EDGES)
    selector = Selector.__new__(Selector)
    selector.__setstate__((500.0, errors, array("I", [10] * len(BAND_EDGES))))
    assert len(selector.errors) == len(CANDIDATES) * len(BAND_EDGES)
    # The new candidate starts with the profile's error: the old choice stands.
    assert [selector.best(b) for b in range(len(BAND_EDGES))] == [1] * len(BAND_EDGES)
    selector.update(0, np.array([[0.3, 0.2, 0.25, 0.05]] * 200))
    assert CANDIDATES[selector.best(0)] == "profile_typed"
