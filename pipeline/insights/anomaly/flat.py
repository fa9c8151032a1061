"""FLAT_LINE: a sensor stuck on one non-zero value for far longer than the device ever holds one.

A window is flat when its minimum and maximum are equal; consecutive flat windows at the same value
(no silence between them) form a hold. The device's resolution is learned as the smallest non-zero
change between consecutive windows, and only values of at least ``flat_quanta`` resolution steps
count: a meter that counts whole Wh per half hour repeats "6 W" all night in an empty home, which
is not a stuck sensor. The longest hold seen (River ``Max``) sets the limit: max(``flat_min_s``, ``flat_min_readings``
usual reporting intervals, ``flat_factor`` x longest); a hold past it opens the anomaly at the
hold's start, and the first different value (or silence) closes it. Holds that alerted are not
learned, nor are holds of at least ``flat_min_s`` and ``flat_min_readings`` intervals: a live
sensor that repeats itself that long is stuck even when it is not yet alarming (REFIT has dozens
of hour-long holds), and learning them would raise the limit and hide the next stuck run.

Score: the hold's length divided by the longest hold learned before it.
"""

from __future__ import annotations

import math

from river import stats

from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import duration, power
from pipeline.records import Anomaly, AnomalyKind, DeviceWindow


class FlatLine:
    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.longest = stats.Max()
        self.resolution = math.inf
        self.prev_mean: float | None = None
        self.first_ts: float | None = None
        self.value = 0.0
        self.hold_start: float | None = None
        self.hold_last = 0.0
        self.open_longest: float | None = None  # set while an anomaly is open

    def longest_hold(self) -> float:
        return max(self.longest.get(), 0.0)

    def _counts(self, value: float) -> bool:
        return value != 0.0 and abs(value) >= self.settings.flat_quanta * self.resolution

    def _floor(self, usual_gap_s: float) -> float:
        return max(self.settings.flat_min_s, self.settings.flat_min_readings * usual_gap_s)

    def add(self, subject: Subject, ts: float, window: DeviceWindow, continue_gap_s: float,
            usual_gap_s: float) -> list[Anomaly]:
        if self.first_ts is None:
            self.first_ts = ts
        mean = window.mean_power_w
        if self.prev_mean is not None:
            change = abs(mean - self.prev_mean)
            if 0.0 < change < self.resolution:
                self.resolution = change
        self.prev_mean = mean
        tolerance = 1e-9 * max(1.0, abs(mean))
        flat = window.max_power_w - window.min_power_w <= tolerance
        out: list[Anomaly] = []
        if self.hold_start is not None:
            if (flat and abs(mean - self.value) <= tolerance
                    and ts - self.hold_last <= continue_gap_s):
                self.hold_last = ts
                return self._judge(subject, ts, usual_gap_s)
            gap = ts - self.hold_last > continue_gap_s
            out.extend(self._end_hold(subject, self.hold_last + self.settings.window_s if gap else ts,
                                      usual_gap_s))
        if flat:
            self.value, self.hold_start, self.hold_last = mean, ts, ts
        return out

    def _judge(self, subject: Subject, ts: float, usual_gap_s: float) -> list[Anomaly]:
        s = self.settings
        if self.open_longest is not None or not self._counts(self.value):
            return []
        start, first_ts = self.hold_start, self.first_ts
        assert start is not None and first_ts is not None  # judged inside a hold, after add()
        length = ts + s.window_s - start
        longest = self.longest_hold()
        if (ts - first_ts < s.flat_warmup_s
                or length <= max(self._floor(usual_gap_s), s.flat_factor * longest)):
            return []
        self.open_longest = longest
        return [subject.anomaly(
            AnomalyKind.FLAT_LINE, start, None, length / max(longest, s.window_s),
            f"Your {subject.name} has read exactly {power(self.value)} since "
            f"{subject.when(start, ts)} ({duration(length)}); it never held one value for "
            f"longer than {duration(longest, round_up=True)} before: the sensor may be stuck.")]

    def _end_hold(self, subject: Subject, end: float, usual_gap_s: float) -> list[Anomaly]:
        s = self.settings
        start, self.hold_start = self.hold_start, None
        assert start is not None  # called inside a hold
        length = self.hold_last + s.window_s - start
        if self.open_longest is None:
            if self._counts(self.value) and length < self._floor(usual_gap_s):
                self.longest.update(length)
            return []
        longest, self.open_longest = self.open_longest, None
        return [subject.anomaly(
            AnomalyKind.FLAT_LINE, start, end, length / max(longest, self.settings.window_s),
            f"Your {subject.name} read exactly {power(self.value)} from {subject.when(start)} to "
            f"{subject.when(end, start)} ({duration(end - start)}); it never held one value for "
            f"longer than {duration(longest, round_up=True)} before: the sensor was probably stuck.")]
