"""Each anomaly kind on a real slice (tests/fixtures, see ATTRIBUTION.md); storms, pickling, memory."""

from __future__ import annotations

import pickle
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pipeline.evaluation.anomaly_series import DeviceSeries, device_windows, home_windows
from pipeline.evaluation.fridge import Drift, simulate_fridge
from pipeline.evaluation.inject import (
    add_load,
    derive_counter,
    drop,
    glitch_counter,
    on_periods,
    reset_counter,
    stretch_run,
)
from pipeline.insights.anomaly import AnomalySettings, DeviceDetector, HomeDetector
from pipeline.insights.anomaly.clock import LocalClock
from pipeline.insights.anomaly.text import duration
from pipeline.records import AnomalyKind, DeviceKind, HomeWindow
from tests.anomaly_cases import BRISBANE, LONDON, US, at, copy, refit, run_device, run_home, sgsc, utc

APRIL = "refit_house20_2014-04_4weeks.parquet"
ALL_COLUMNS = ("aggregate_w=mains:meter,kettle_w=kettle,dishwasher_w=dishwasher,"
               "washing_machine_w=washing_machine,microwave_w=microwave")


@pytest.fixture(scope="module")
def april() -> dict[str, DeviceSeries]:
    return refit(APRIL, ALL_COLUMNS)


def kinds(anomalies) -> list[AnomalyKind]:
    return [a.kind for a in anomalies]


# ---------------------------------------------------------------- FLAT_LINE


def test_flat_line_finds_refit_house20_stuck_at_445_w():
    mains = refit("refit_house20_stuck_445w.parquet", "aggregate_w=mains:meter")["mains"]
    found = run_device(device_windows(mains))
    assert kinds(found) == [AnomalyKind.FLAT_LINE]  # opened, still stuck when the slice ends
    (stuck,) = found
    # 2015-02-26 18:09 UK time (GMT in February) is when REFIT starts repeating 445 W.
    assert stuck.started_at == datetime(2015, 2, 26, 18, 9, tzinfo=timezone.utc)
    assert stuck.ended_at is None
    assert "445 W" in stuck.message and "stuck" in stuck.message
    assert stuck.score > 4  # over four times the longest hold it had learned


def test_a_two_day_stuck_run_opens_once_and_closes_once():
    """REFIT House 2 holds 84 W for about two days from 2014-08-30 12:05 (UK time): one anomaly,
    emitted when it opens and again when it clears, never a storm."""
    mains = refit("refit_house2_hold_2014-08-30.parquet", "aggregate_w=mains:meter")["mains"]
    found = run_device(device_windows(mains))
    assert kinds(found) == [AnomalyKind.FLAT_LINE, AnomalyKind.FLAT_LINE]
    opened, closed = found
    assert opened.ended_at is None and closed.started_at == opened.started_at
    assert opened.started_at == datetime(2014, 8, 30, 11, 6, tzinfo=timezone.utc)  # 12:05:30 BST
    assert closed.ended_at - closed.started_at > timedelta(days=1, hours=19)
    assert "84 W" in closed.message and "from Sat 30 Aug 12:06" in closed.message


# ---------------------------------------------------------------- LONG_RUNNING


def test_a_real_kettle_run_stretched_to_two_hours_is_long_running(april):
    kettle = april["kettle"]
    assert not [a for a in run_device(device_windows(kettle)) if a.kind == AnomalyKind.LONG_RUNNING]
    stuck = copy(kettle)
    first, last = next((a, b) for a, b in on_periods(stuck, 10.0, 300.0)
                       if stuck.ts[a] / US > at(stuck, 20) and stuck.power[a:b + 1].max() > 2000)
    start = stuck.ts[first] / US
    stretch_run(stuck, first, last, start + 2 * 3600, 10.0, np.random.default_rng(1))
    found = [a for a in run_device(device_windows(stuck)) if a.kind == AnomalyKind.LONG_RUNNING]
    assert len(found) == 2 and found[0].ended_at is None and found[1].ended_at is not None
    assert found[0].started_at == found[1].started_at == utc(start - start % 60)
    assert abs((found[1].ended_at - found[1].started_at) - timedelta(hours=2)) <= timedelta(minutes=1)
    usual = re.search(r"usually runs for under (\d+) min", found[1].message)
    assert usual and 2 <= int(usual.group(1)) <= 10, found[1].message
    assert found[1].message.startswith("Your kettle was on for 2 h")


# ---------------------------------------------------------------- HIGH_CONSUMPTION


def test_a_heater_left_on_at_night_is_high_consumption_of_the_home(april):
    mains = april["mains"]
    assert not run_home(mains)  # four real weeks: no alert
    heated = copy(mains)
    night = at(heated, 22) - at(heated, 22) % 86400 + 1 * 3600  # 01:00 UTC (02:00 BST), day 22
    add_load(heated, night, night + 4 * 3600, 2500.0)
    found = run_home(heated)
    assert kinds(found) == [AnomalyKind.HIGH_CONSUMPTION] * 2
    opened, closed = found
    assert opened.device_id == "" and closed.started_at == opened.started_at
    assert night <= opened.started_at.timestamp() <= night + 600
    assert night + 4 * 3600 <= closed.ended_at.timestamp() <= night + 4 * 3600 + 3600
    assert re.fullmatch(r"Your home used \d+\.\d kWh in the hour to Tue 22 Apr 0\d:\d\d; at this time of day it "
                        r"usually uses under \d+\.\d kWh\.", opened.message), opened.message
    assert closed.score > 2


def test_a_heater_left_on_every_third_night_is_found_every_time(april):
    """A fault's hours are not learned as the home's normal (they would lift the usual high of
    those hours for four weeks and hide the next ones), yet peaks that never become an anomaly
    still are (the four real weeks above raise nothing)."""
    heated = copy(april["mains"])
    first = at(heated, 14) - at(heated, 14) % 86400 + 3600
    nights = [first + k * 3 * 86400 for k in range(4)]
    for night in nights:
        add_load(heated, night, night + 4 * 3600, 2500.0)
    opened = [a for a in run_home(heated) if a.ended_at is None]
    assert [a.kind for a in opened] == [AnomalyKind.HIGH_CONSUMPTION] * 4
    assert [round((a.started_at.timestamp() - first) / 86400) for a in opened] == [0, 3, 6, 9]


def test_the_profile_is_learned_on_the_local_clock_across_daylight_saving():
    """A home that uses 3 kW every evening from 19:00 to 20:00 local time, across the spring
    change of 2014-03-30: the hour is learned in the 19:00 slot before and after it."""
    detector = HomeDetector(AnomalySettings(), LONDON)
    start = datetime(2014, 3, 20, tzinfo=timezone.utc)
    clock = LocalClock(LONDON)
    for minute in range(14 * 24 * 60):
        bucket = start + timedelta(minutes=minute)
        busy = clock.local(bucket.timestamp()).hour == 19
        watts = 3000.0 if busy else 200.0
        detector.add(HomeWindow("h", bucket, watts, watts, watts, watts / 60, 2))
    profile = detector.high.profile
    assert profile.slots[19].get() == pytest.approx(3000.0)
    assert profile.slots[18].get() == pytest.approx(200.0) and profile.slots[20].get() == pytest.approx(200.0)


# ---------------------------------------------------------------- SILENT


def test_a_meter_that_went_silent_in_a_replay(april):
    mains = april["mains"]
    gap_start = at(mains, 10) - at(mains, 10) % 3600
    silent = drop(copy(mains), gap_start, gap_start + 3 * 3600)
    found = [a for a in run_device(device_windows(silent)) if a.kind == AnomalyKind.SILENT]
    assert len(found) == 2  # opened and closed at once: the next window came after the gap
    opened, closed = found
    limit = AnomalySettings().silent_min_s  # a 30-s meter: the 30-minute floor applies
    assert opened.started_at.timestamp() == gap_start + limit
    assert closed.ended_at.timestamp() == gap_start + 3 * 3600
    assert "sent nothing from" in closed.message and "every 1 min" in closed.message


def test_silent_in_the_live_flow_needs_the_wall_clock(april):
    """Live: no window comes, so the flow asks with next_due()/check(now); the anomaly it opens
    has the started_at a replay would give, and the returning window closes it."""
    mains = april["mains"]
    windows = device_windows(mains)
    cut = next(i for i, w in enumerate(windows) if w.bucket.timestamp() >= at(mains, 10))
    detector = DeviceDetector(AnomalySettings(), LONDON)
    delay = timedelta(seconds=70)  # a minute is emitted about 70 s after it starts
    for w in windows[:cut]:
        assert not [a for a in detector.add(w, w.bucket + delay) if a.kind == AnomalyKind.SILENT]
    last = windows[cut - 1]
    due = detector.next_due()
    assert due == last.bucket + delay + timedelta(seconds=AnomalySettings().silent_min_s)
    assert detector.check(due - timedelta(seconds=1)) == []
    (opened,) = detector.check(due)
    assert opened.kind == AnomalyKind.SILENT and opened.ended_at is None
    assert opened.started_at == last.bucket + timedelta(minutes=1) + timedelta(seconds=AnomalySettings().silent_min_s)
    assert detector.next_due() is None and detector.check(due + timedelta(hours=1)) == []  # once
    back = replace(windows[cut], bucket=last.bucket + timedelta(hours=3))
    (closed,) = [a for a in detector.add(back, back.bucket + delay) if a.kind == AnomalyKind.SILENT]
    assert closed.started_at == opened.started_at and closed.ended_at == back.bucket


# ---------------------------------------------------------------- COUNTER_BACKWARDS


def test_a_counter_reset_alerts_once_and_a_one_sample_glitch_never():
    home = sgsc()["10006414"]  # the importer's cumulative counter of a real SGSC home
    assert home.energy is not None
    changed = copy(home)
    glitch_counter(changed, at(changed, 5))
    confirmed = reset_counter(changed, at(changed, 8))
    found = [a for a in run_device(device_windows(changed), BRISBANE) if a.kind == AnomalyKind.COUNTER_BACKWARDS]
    assert len(found) == 2
    opened, closed = found
    assert opened.started_at == utc(confirmed) and closed.ended_at == utc(confirmed + 60)
    assert "went backwards" in opened.message and closed.score == 1


def test_counter_resets_in_a_row_are_one_anomaly(april):
    mains = copy(april["mains"])
    derive_counter(mains, 900.0)  # REFIT has no counter: one from its power, as a meter keeps it
    for k in range(4):  # a meter that keeps rebooting: a reset every 10 minutes
        reset_counter(mains, at(mains, 8) + k * 600)
    found = [a for a in run_device(device_windows(mains)) if a.kind == AnomalyKind.COUNTER_BACKWARDS]
    assert len(found) == 2 and found[1].score == 4 and "went backwards 4 times" in found[1].message


# ---------------------------------------------------------------- DUTY_CYCLE_DRIFT


def fridge_for(home: dict[str, DeviceSeries], drifts: list[Drift]) -> DeviceSeries:
    """The semi-synthetic fridge (no fridge in these datasets): its door opened by the real kettle
    and microwave of REFIT House 20, sampled when the real plugs reported."""
    kettle, microwave = home["kettle"], home["microwave"]
    door = np.zeros(len(kettle.ts), dtype=bool)
    for plug in (kettle, microwave):
        in_use = plug.power > 200
        door |= np.isin(kettle.ts, plug.ts[1:][in_use[1:] & ~in_use[:-1]])
    power = simulate_fridge(kettle.ts, door, drifts, np.random.default_rng(7))
    return DeviceSeries(kettle.home_id, "fridge", DeviceKind.APPLIANCE, kettle.ts.copy(), power)


def test_a_fridge_running_far_more_than_usual_is_duty_cycle_drift():
    plugs = refit("refit_house20_kettle_microwave_8weeks.parquet", "kettle_w=kettle,microwave_w=microwave")
    normal = run_device(device_windows(fridge_for(plugs, [])))
    assert not [a for a in normal if a.kind in (AnomalyKind.DUTY_CYCLE_DRIFT, AnomalyKind.LONG_RUNNING)]
    start = at(plugs["kettle"], 30)
    drifted = run_device(device_windows(fridge_for(plugs, [Drift(start, start + 36 * 3600, 0.65)])))
    found = [a for a in drifted if a.kind == AnomalyKind.DUTY_CYCLE_DRIFT]
    assert len(found) == 2
    opened, closed = found
    assert start - 3600 <= opened.started_at.timestamp() <= start + 6 * 3600
    assert start + 30 * 3600 <= closed.ended_at.timestamp() <= start + 42 * 3600
    shares = [int(x) for x in re.findall(r"(\d+) %", opened.message)]
    assert shares[0] >= 50 and 25 <= shares[1] <= 45, opened.message  # now, usually
    assert "door" in opened.message


# ---------------------------------------------------------------- streams, pickling, memory


def faulty_april(april) -> tuple[list, list[HomeWindow]]:
    """Device windows of the kettle and the meter, and the home's totals, with faults written in."""
    kettle, mains = copy(april["kettle"]), copy(april["mains"])
    first, last = next((a, b) for a, b in on_periods(kettle, 10.0, 300.0) if kettle.ts[a] / US > at(kettle, 12))
    stretch_run(kettle, first, last, kettle.ts[first] / US + 3 * 3600, 10.0, np.random.default_rng(2))
    add_load(mains, at(mains, 15), at(mains, 15) + 5 * 3600, 4000.0)
    derive_counter(mains, 900.0)
    reset_counter(mains, at(mains, 18))
    mains = drop(mains, at(mains, 20), at(mains, 20) + 4 * 3600)
    return [device_windows(kettle), device_windows(mains)], home_windows([device_windows(mains)], known_meter=True)


def test_pickling_mid_stream_continues_identically(april):
    devices, homes = faulty_april(april)
    streams = [(DeviceDetector, w) for w in devices] + [(HomeDetector, homes)]
    for make, windows in streams:
        straight = make(AnomalySettings(), LONDON)
        want = [a for w in windows for a in straight.add(w)]
        assert want, "the case must produce anomalies"
        for cut in (len(windows) // 3, len(windows) // 2, len(windows) - 10):
            detector = make(AnomalySettings(), LONDON)
            got = [a for w in windows[:cut] for a in detector.add(w)]
            detector = pickle.loads(pickle.dumps(detector))
            got += [a for w in windows[cut:] for a in detector.add(w)]
            assert got == want


def test_state_is_bounded_however_long_the_stream(april):
    """Four real weeks replayed three times in a row (12 weeks): the rolling histories are full
    after the first pass, so the state stops growing, and it stays a few KB."""
    devices, homes = faulty_april(april)
    week4 = timedelta(days=28)

    def shifted(windows, k):
        return [replace(w, bucket=w.bucket + k * week4) for w in windows]

    for make, windows in [(DeviceDetector, devices[0]), (DeviceDetector, devices[1]), (HomeDetector, homes)]:
        detector = make(AnomalySettings(), LONDON)
        sizes = []
        for k in range(3):
            for w in shifted(windows, k):
                detector.add(w)
            sizes.append(len(pickle.dumps(detector)))
        assert sizes[2] <= 40_000, sizes
        assert sizes[2] <= sizes[1] * 1.05, sizes


def test_a_re_emitted_bucket_is_not_learned_twice(april):
    windows = device_windows(april["kettle"])[:3000]
    once, twice = DeviceDetector(tz=LONDON), DeviceDetector(tz=LONDON)
    for w in windows:
        once.add(w)
        twice.add(w)
        assert twice.add(w) == []  # the same bucket again
    assert pickle.dumps(once) == pickle.dumps(twice)


def test_a_home_bucket_corrected_later_replaces_its_value():
    detector = HomeDetector(tz=LONDON)
    t0 = datetime(2014, 4, 1, tzinfo=timezone.utc)
    detector.add(HomeWindow("h", t0, 100.0, 100.0, 100.0, 1.0, 2))
    detector.add(HomeWindow("h", t0 + timedelta(minutes=1), 100.0, 100.0, 100.0, 1.0, 2))
    detector.add(HomeWindow("h", t0, 700.0, 700.0, 700.0, 11.0, 4))  # a late device minute amended it
    assert detector.high.recent_wh == pytest.approx(12.0)


# ---------------------------------------------------------------- clock, text, settings


def test_local_clock_follows_daylight_saving_and_half_hour_zones():
    london = LocalClock(LONDON)
    spring = datetime(2014, 3, 30, 1, 0, tzinfo=timezone.utc).timestamp()  # 01:00 GMT -> 02:00 BST
    assert london.hour_of_day(spring - 60) == 0 and london.hour_of_day(spring) == 2
    autumn = datetime(2014, 10, 26, 1, 0, tzinfo=timezone.utc).timestamp()  # 02:00 BST -> 01:00 GMT
    assert london.hour_of_day(autumn - 60) == 1 and london.hour_of_day(autumn) == 1
    # The repeated 01:00-02:00 is one local hour on the clock: its mean is learned over both.
    assert london.hour_key(autumn - 60) == london.hour_key(autumn) != london.hour_key(autumn - 3660)
    adelaide = LocalClock("Australia/Adelaide")  # UTC+10:30 in January
    assert adelaide.hour_of_day(datetime(2014, 1, 1, 13, 29, tzinfo=timezone.utc).timestamp()) == 23
    assert adelaide.hour_of_day(datetime(2014, 1, 1, 13, 30, tzinfo=timezone.utc).timestamp()) == 0
    assert pickle.loads(pickle.dumps(london)).hour_of_day(spring) == 2


def test_unknown_time_zone_and_bad_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        DeviceDetector(tz="Mars/Olympus")
    with pytest.raises(ValueError, match="high_quantile must lie strictly between 0 and 1"):
        AnomalySettings(high_quantile=1.5)
    with pytest.raises(ValueError, match="silent_min_s must not be negative"):
        AnomalySettings(silent_min_s=-1)


@pytest.mark.parametrize("seconds, text", [(30, "30 s"), (360, "6 min"), (7800, "2 h 10 min"),
                                           (7200, "2 h"), (13 * 86400 + 2 * 3600, "13 days 2 h")])
def test_durations_read_like_a_person_wrote_them(seconds, text):
    assert duration(seconds) == text
