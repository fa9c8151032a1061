"""Minutes to slots: coverage, gaps, re-sent minutes, sparse meters, and the local clock across
the UK's DST changes."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import polars as pl

from pipeline.evaluation.replay import home_windows, split_homes
from pipeline.ingest.tabular import TableSpec, parse_device_cols, readings_frame
from pipeline.insights.forecast.calendar import LocalClock, day_of_week
from pipeline.insights.forecast.history import SlotRing
from pipeline.insights.forecast.slotting import MinuteSlotter
from tests.conftest import FIXTURES

HOUR = 60 * 24 * 19_000  # an hour boundary (2022-01-08 00:00 UTC), in epoch minutes


def slotter() -> MinuteSlotter:
    return MinuteSlotter((60, 15), min_coverage=0.8, max_hold_min=30)


def by_key(closed):
    return {(s.resolution, s.start_min): s for s in closed}


def test_an_hour_of_minutes_gives_the_hour_and_its_quarters_when_the_next_hour_starts():
    s = slotter()
    for m in range(60):
        assert s.add(HOUR + m, float(m)) == []  # nothing closes inside the hour
    closed = by_key(s.add(HOUR + 60, 0.0))
    assert len(closed) == 5
    assert closed[(60, HOUR)].value == np.mean(range(60)) and closed[(60, HOUR)].coverage == 1.0
    for q in range(4):
        assert closed[(15, HOUR + 15 * q)].value == np.mean(range(15 * q, 15 * q + 15))


def test_a_gap_makes_slots_missing_never_zero():
    s = slotter()
    for m in range(40):  # a 1-minute stream that stops for the last 20 minutes of the hour
        s.add(HOUR + m, 500.0)
    closed = by_key(s.add(HOUR + 60, 500.0))
    assert closed[(60, HOUR)].value is None and math.isclose(closed[(60, HOUR)].coverage, 40 / 60)
    assert closed[(15, HOUR)].value == 500.0 and closed[(15, HOUR + 15)].value == 500.0
    assert closed[(15, HOUR + 30)].value is None  # 10 of 15 minutes
    assert closed[(15, HOUR + 45)].value is None and closed[(15, HOUR + 45)].coverage == 0.0


def test_a_resent_minute_replaces_its_value_while_the_hour_is_open_and_is_ignored_after():
    s = slotter()
    for m in range(60):
        s.add(HOUR + m, 100.0)
    s.add(HOUR + 10, 700.0)  # the flow re-emits minute 10 with a late device minute added
    closed = by_key(s.add(HOUR + 60, 100.0))
    assert math.isclose(closed[(60, HOUR)].value, 100.0 + 600.0 / 60)
    assert math.isclose(closed[(15, HOUR)].value, 100.0 + 600.0 / 15)
    assert s.add(HOUR + 20, 9999.0) == []  # its hour is closed
    for m in range(61, 120):
        s.add(HOUR + m, 100.0)
    assert by_key(s.add(HOUR + 120, 100.0))[(60, HOUR + 60)].value == 100.0


def test_a_half_hourly_meter_covers_its_half_hours_and_a_lost_interval_is_missing():
    s = slotter()
    s.add(HOUR, 200.0)
    s.add(HOUR + 30, 400.0)
    closed = by_key(s.add(HOUR + 60, 600.0))
    assert closed[(60, HOUR)].value == 300.0 and closed[(60, HOUR)].coverage == 1.0
    assert closed[(15, HOUR + 15)].value == 200.0 and closed[(15, HOUR + 45)].value == 400.0
    # The 02:30 interval never arrives: its half hour is a gap, not the 02:00 value held.
    closed = by_key(s.add(HOUR + 120, 600.0))
    assert closed[(60, HOUR + 60)].value is None and closed[(60, HOUR + 60)].coverage == 0.5
    assert closed[(15, HOUR + 60)].value == 600.0 and closed[(15, HOUR + 90)].value is None


def test_a_days_long_hole_closes_only_the_hours_that_had_data():
    s = slotter()
    for m in range(60):
        s.add(HOUR + m, 300.0)
    closed = s.add(HOUR + 3 * 1440 + 5, 300.0)  # three days later
    assert {c.start_min for c in closed if c.resolution == 60} == {HOUR}
    assert all(c.value is None or c.value == 300.0 for c in closed)


def test_real_refit_minutes_through_the_flow_operators_make_the_hourly_mean():
    spec = TableSpec(layout="wide", ts_col="timestamp", home_col="house", tz="Europe/London",
                     device_cols=parse_device_cols("aggregate_w=mains:meter"), skip_flag_col="aggregate_missing")
    frame = readings_frame(FIXTURES / "refit_house2_2h_wide.csv", spec)
    raw = pl.read_csv(FIXTURES / "refit_house2_2h_wide.csv", try_parse_dates=True)
    s = slotter()
    closed = []
    for window in home_windows(split_homes(frame)[0][1]):
        closed += s.add(int(window.bucket.timestamp()) // 60, window.mean_power_w)
    hours = {datetime.fromtimestamp(c.start_min * 60, timezone.utc): c for c in closed if c.resolution == 60}
    # The file runs 06:09-08:09 BST = 05:09-07:09 UTC: 05:00 UTC is 51/60 covered, 06:00 full.
    first, full = hours[datetime(2013, 9, 20, 5, tzinfo=timezone.utc)], hours[datetime(2013, 9, 20, 6, tzinfo=timezone.utc)]
    assert math.isclose(first.coverage, 51 / 60) and first.value is not None
    assert full.coverage == 1.0
    expected = raw.filter(pl.col("timestamp").is_between(datetime(2013, 9, 20, 7), datetime(2013, 9, 20, 7, 59, 59)))
    assert math.isclose(full.value, expected["aggregate_w"].mean(), rel_tol=1e-6)  # float32 minutes


def test_local_slots_follow_the_wall_clock_across_both_uk_dst_changes():
    clock = LocalClock("Europe/London")

    def utc(*a) -> int:
        return int(datetime(*a, tzinfo=timezone.utc).timestamp()) // 60

    # Spring forward, 2014-03-30 01:00 UTC: 00:00 GMT then 02:00 BST; local 01:00 never exists.
    before, after = clock.local_slot(utc(2014, 3, 30, 0), 60), clock.local_slot(utc(2014, 3, 30, 1), 60)
    assert after - before == 2
    assert clock.local_slot(utc(2014, 3, 30, 17), 60) - 24 == clock.local_slot(utc(2014, 3, 29, 18), 60)
    # Fall back, 2014-10-26 01:00 UTC: local 01:00 happens twice and maps to one slot.
    assert clock.local_slot(utc(2014, 10, 26, 0), 60) == clock.local_slot(utc(2014, 10, 26, 1), 60)
    assert clock.local_slot(utc(2014, 10, 26, 18), 60) - 24 == clock.local_slot(utc(2014, 10, 25, 17), 60)
    assert day_of_week(clock.local_slot(utc(2014, 10, 26, 12), 15), 15) == 6  # a Sunday
    assert clock.local_slot(utc(2014, 3, 30, 1, 15), 15) - clock.local_slot(utc(2014, 3, 30, 0, 45), 15) == 6


def test_the_ring_forgets_skipped_slots_instead_of_serving_stale_ones():
    ring = SlotRing(10)
    for i in range(10):
        ring.put(i, float(i))
    ring.put(14, 14.0)  # 10..13 never came: they are missing, not the values of 0..3
    assert all(math.isnan(ring.get(i)) for i in (10, 11, 12, 13))
    assert ring.get(14) == 14.0 and ring.get(9) == 9.0 and math.isnan(ring.get(4))  # 4 fell out
    taken = ring.take(np.array([5, 9, 14, 15]), known_until=9)
    assert taken[0] == 5.0 and taken[1] == 9.0 and np.isnan(taken[2]) and np.isnan(taken[3])
