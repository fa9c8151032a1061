"""A home-wide outage is one SILENT anomaly of the home, not one per device (issue 14).

Real data: three days of REFIT House 20 (its meter and four appliances, every 30 s) with a
three-hour hole cut into every device (a power cut) or into one (a device that failed alone),
replayed as an import replays it and fed live with the wall clock as the flow does.
"""

from __future__ import annotations

import heapq
import pickle
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from pipeline.evaluation.anomaly_series import DeviceSeries, detect, device_windows
from pipeline.evaluation.inject import drop
from pipeline.insights.anomaly import AnomalySettings
from pipeline.insights.packing import pack, unpack
from pipeline.insights.step import HomeInsights, InsightSettings
from pipeline.records import Anomaly, AnomalyKind, DeviceWindow
from tests.anomaly_cases import LONDON, US, at, refit
from tests.test_anomaly_detectors import ALL_COLUMNS, APRIL

HOUR = 3600
LIMIT = AnomalySettings().silent_min_s  # 30-s devices: the 30-minute floor applies
NAMES = ("dishwasher", "kettle", "mains meter", "microwave", "washing machine")


@pytest.fixture(scope="module")
def three_days() -> dict[str, DeviceSeries]:
    out = {}
    for name, s in refit(APRIL, ALL_COLUMNS).items():
        keep = s.ts < s.ts[0] + 3 * 86400 * US
        out[name] = replace(s, ts=s.ts[keep], power=s.power[keep],
                            energy=None if s.energy is None else s.energy[keep])
    return out


def gap(series: dict[str, DeviceSeries]) -> float:
    start = at(series["mains"], 2)
    return start - start % HOUR


def cut(series: dict[str, DeviceSeries], devices, start: float, end: float) -> list[DeviceSeries]:
    return [drop(s, start, end) if name in devices else s for name, s in series.items()]


def silent(anomalies: list[Anomaly]) -> list[Anomaly]:
    return [a for a in anomalies if a.kind == AnomalyKind.SILENT]


def merged(series: list[DeviceSeries]) -> list[DeviceWindow]:
    return list(heapq.merge(*(device_windows(s) for s in series), key=lambda w: w.bucket))


def test_five_devices_silent_together_are_one_anomaly_of_the_home_in_a_replay(three_days):
    start = gap(three_days)
    found = silent(detect(cut(three_days, three_days, start, start + 3 * HOUR), LONDON))
    assert len(found) == 1, [(a.device_id, a.started_at) for a in found]
    (home,) = found
    assert home.device_id == "" and home.home_id == "REFIT_House20"
    assert home.started_at.timestamp() == start + LIMIT
    assert home.ended_at is not None and home.ended_at.timestamp() == start + 3 * HOUR
    assert "Your home went quiet: 5 devices (" in home.message
    for name in NAMES:
        assert name in home.message
    assert "(3 h)" in home.message


def test_one_device_silent_alone_stays_the_devices_anomaly_in_a_replay(three_days):
    start = gap(three_days)
    found = silent(detect(cut(three_days, {"kettle"}, start, start + 3 * HOUR), LONDON))
    assert [(a.device_id, a.started_at.timestamp(), a.ended_at.timestamp() if a.ended_at else None)
            for a in found] == [("kettle", start + LIMIT, start + 3 * HOUR)]
    assert found[0].message.startswith("Your kettle sent nothing from")


def test_two_of_five_silent_together_stay_two_device_anomalies(three_days):
    start = gap(three_days)
    found = silent(detect(cut(three_days, {"kettle", "microwave"}, start, start + 3 * HOUR), LONDON))
    assert sorted(a.device_id for a in found) == ["kettle", "microwave"]


class Live:
    """One home fed as the live flow feeds it: windows in bucket order with the wall clock ~70 s
    behind, and wall-clock checks when ``next_due`` says."""

    DELAY = timedelta(seconds=70)

    def __init__(self) -> None:
        self.home = HomeInsights("REFIT_House20", LONDON,
                                 InsightSettings(forecasts=False, recommendations=False))

    def feed(self, windows: list[DeviceWindow]) -> list[Anomaly]:
        return silent([a for w in windows for a in self.home.add(w, None, w.bucket + self.DELAY)])

    def checks_until(self, until) -> list[Anomaly]:
        out: list[Anomaly] = []
        while (due := self.home.next_due()) is not None and due <= until:
            out.extend(self.home.check(due))
        return out


def test_a_live_power_cut_opens_one_anomaly_of_the_home_and_the_first_device_back_closes_it(three_days):
    start = gap(three_days)
    windows = merged(list(three_days.values()))
    before = [w for w in windows if w.bucket.timestamp() < start]
    back = [w for w in windows if start + 3 * HOUR <= w.bucket.timestamp() < start + 4 * HOUR]
    live = Live()
    assert live.feed(before) == []
    last_wall = before[-1].bucket + Live.DELAY
    opened = live.checks_until(last_wall + timedelta(hours=3))
    assert [(a.device_id, a.ended_at) for a in opened] == [("", None)]
    assert opened[0].started_at.timestamp() == start + LIMIT  # the key a replay gives
    assert "have sent nothing since" in opened[0].message
    # The recovery snapshot taken during the outage resumes it.
    live.home = pickle.loads(pickle.dumps(live.home))
    closed = live.feed(back)
    assert [(a.device_id, a.started_at, a.ended_at.timestamp() if a.ended_at else None)
            for a in closed] == [("", opened[0].started_at, start + 3 * HOUR)]


def test_a_device_still_quiet_after_the_home_came_back_is_told_as_its_own(three_days):
    start = gap(three_days)
    windows = merged(list(three_days.values()))
    before = [w for w in windows if w.bucket.timestamp() < start]
    back = [w for w in windows if start + 3 * HOUR <= w.bucket.timestamp() < start + 4 * HOUR
            and w.device_id != "kettle"]
    live = Live()
    live.feed(before)
    (home,) = live.checks_until(before[-1].bucket + Live.DELAY + timedelta(hours=3))
    assert home.device_id == ""
    told = live.feed(back)
    # The home closes at the first device back; ten minutes later the kettle, still quiet, is
    # told with the SILENT it opened during the outage.
    assert [(a.device_id, a.ended_at is None) for a in told] == [("", False), ("kettle", True)]
    kettle = told[1]
    assert kettle.started_at.timestamp() == start + LIMIT
    assert kettle.message.startswith("Your kettle has sent nothing since")


def test_one_device_silent_live_is_the_devices_anomaly(three_days):
    start = gap(three_days)
    windows = merged(list(three_days.values()))
    quiet = [w for w in windows if w.bucket.timestamp() < start
             or (w.device_id != "kettle" and w.bucket.timestamp() < start + 3 * HOUR)]
    live = Live()
    found = []
    for w in quiet:  # the other devices keep the wall clock going while the kettle is quiet
        found.extend(live.feed([w]))
        found.extend(live.checks_until(w.bucket + Live.DELAY))
    assert [(a.device_id, a.ended_at) for a in found] == [("kettle", None)]
    assert found[0].started_at.timestamp() == start + LIMIT


def test_an_old_snapshot_without_outage_state_loads_and_groups(three_days):
    """A home's state pickled before issue 14 has no ``outage``: it loads and groups from then on."""
    start = gap(three_days)
    windows = merged(list(three_days.values()))
    live = Live()
    live.feed([w for w in windows if w.bucket.timestamp() < start])
    old = unpack(live.home.__getstate__())
    del old["outage"]
    restored = HomeInsights.__new__(HomeInsights)
    restored.__setstate__(pack(old))
    live.home = restored
    opened = live.checks_until(windows[0].bucket + timedelta(days=5))
    assert [a.device_id for a in opened] == [""]
    assert np.isclose(opened[0].started_at.timestamp(), start + LIMIT)


def test_settings_pickled_by_field_order_before_outages_load_with_their_defaults():
    """Snapshots from before settings were pickled by name hold the field values in order."""
    from dataclasses import fields

    given = AnomalySettings(silent_min_s=900.0)
    old = [getattr(given, f.name) for f in fields(given) if not f.name.startswith("outage_")]
    restored = AnomalySettings.__new__(AnomalySettings)
    restored.__setstate__(old)
    assert restored == AnomalySettings(silent_min_s=900.0)
    assert restored.outage_share == 0.75 and restored.counter_quiet_s == 3600.0
