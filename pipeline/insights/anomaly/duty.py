"""DUTY_CYCLE_DRIFT: a cycling appliance (a fridge's compressor) on for a different share of the
time than usual: a door left open or a failing seal makes it run more, a failing compressor less.

Each complete UTC hour gives the share of its windows that were on. The statistic is the mean of
the last ``duty_horizon_h`` consecutive hours; its median over the last ``duty_history_h`` hours
is the usual duty, and the median of its absolute deviation from that is the usual spread (River
``RollingQuantile`` for both: 2 x 336 floats). It alerts when the statistic is off the usual duty by
more than max(``duty_min_shift``, ``duty_mad_factor`` x spread) and clears within half of that.
Only devices that cycle are judged: usual duty inside ``duty_range`` and at least
``duty_min_cycles_per_h`` on-starts an hour (an exponentially weighted mean, River ``EWMean``).

Score: the largest absolute difference between the statistic and the usual duty while open, as a
share of time (0.25 = 25 percentage points).
"""

from __future__ import annotations

from collections import deque

from river import stats

from pipeline.insights.anomaly.learned import learned
from pipeline.insights.anomaly.rolling import RollingQuantile, compact
from pipeline.insights.anomaly.settings import HOUR, AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import percent
from pipeline.records import Anomaly, AnomalyKind


class DutyCycle:
    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.hour: int | None = None  # the UTC hour being counted
        self.hour_on = self.hour_windows = self.hour_starts = 0
        self.prev_on = False
        self.hours: deque[tuple[int, float]] = deque(maxlen=settings.duty_horizon_h)  # (hour, duty)
        self.usual = RollingQuantile(q=0.5, window_size=settings.duty_history_h)
        self.spread = RollingQuantile(q=0.5, window_size=settings.duty_history_h)
        self.cycles = stats.EWMean(fading_factor=0.02)
        self.learned_hours = 0
        self.open_start: float | None = None
        self.open_usual = 0.0
        self.open_up = True
        self.open_margin = 0.0
        self.open_score = 0.0
        self.open_worst = 0.0
        self.open_last_abnormal = 0.0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.usual, self.spread = compact(self.usual), compact(self.spread)  # River's, before

    def add(self, subject: Subject, ts: float, on: bool) -> list[Anomaly]:
        hour = int(ts // HOUR)
        out: list[Anomaly] = []
        if hour != self.hour:
            if self.hour is not None:
                out = self._finish_hour(subject)
            self.hour = hour
            self.hour_on = self.hour_windows = self.hour_starts = 0
        self.hour_windows += 1
        if on:
            self.hour_on += 1
            if not self.prev_on:
                self.hour_starts += 1
        self.prev_on = on
        return out

    def is_cycling(self) -> bool:
        s = self.settings
        if self.learned_hours < s.duty_warmup_hours:
            return False
        usual = learned(self.usual)
        return s.duty_range[0] <= usual <= s.duty_range[1] and self.cycles.get() >= s.duty_min_cycles_per_h

    def _finish_hour(self, subject: Subject) -> list[Anomaly]:
        s = self.settings
        if self.hour_windows < s.duty_min_windows_per_h:
            self.hours.clear()  # a gap: the horizon restarts
            return []
        hour = self.hour
        assert hour is not None  # called when a counted hour ends
        duty = self.hour_on / self.hour_windows
        if self.hours and self.hours[-1][0] != hour - 1:
            self.hours.clear()
        self.hours.append((hour, duty))
        if len(self.hours) < s.duty_horizon_h:
            return []
        recent = sum(d for _, d in self.hours) / len(self.hours)
        end_of_hour = (hour + 1) * HOUR
        out: list[Anomaly] = []
        if self.open_start is None and self.learned_hours:
            usual = learned(self.usual)
            margin = max(s.duty_min_shift, s.duty_mad_factor * learned(self.spread))
            if self.is_cycling() and abs(recent - usual) > margin:
                up = recent > usual
                # The drift began with the first hour of the horizon already off by half the margin.
                first = next((h for h, d in self.hours if (d - usual if up else usual - d) > margin / 2),
                             self.hours[0][0])
                self.open_start, self.open_usual, self.open_up = first * HOUR, usual, up
                self.open_margin = margin
                self.open_score = self.open_worst = abs(recent - usual)
                self.open_last_abnormal = end_of_hour
                out.append(subject.anomaly(AnomalyKind.DUTY_CYCLE_DRIFT, self.open_start, None,
                                           self.open_score, self._message(subject, recent, None)))
        elif self.open_start is not None:
            off = recent - self.open_usual if self.open_up else self.open_usual - recent
            if (duty - self.open_usual if self.open_up else self.open_usual - duty) > self.open_margin / 2:
                self.open_last_abnormal = end_of_hour
            if off > self.open_worst:
                self.open_worst = self.open_score = off
            if off <= self.open_margin / 2:
                worst = self.open_usual + (self.open_worst if self.open_up else -self.open_worst)
                end = max(self.open_last_abnormal, self.open_start + HOUR)
                out.append(subject.anomaly(AnomalyKind.DUTY_CYCLE_DRIFT, self.open_start, end,
                                           self.open_score, self._message(subject, worst, end)))
                self.open_start = None
        if self.open_start is None or end_of_hour - self.open_start > s.learn_pause_max_s:
            usual = learned(self.usual) if self.learned_hours else recent
            self.usual.update(recent)
            self.spread.update(abs(recent - usual))
            self.cycles.update(self.hour_starts)
            self.learned_hours += 1
        return out

    def _message(self, subject: Subject, share: float, end: float | None) -> str:
        usual = percent(self.open_usual)
        h = self.settings.duty_horizon_h
        if end is None:
            if self.open_up:
                return (f"Your {subject.name} has been running {percent(share)} of the time over the "
                        f"last {h} h; it usually runs about {usual} of the time (a door left open or "
                        f"a failing seal?).")
            return (f"Your {subject.name} has been running only {percent(share)} of the time over the "
                    f"last {h} h; it usually runs about {usual} of the time: check that it still works.")
        worst = "up to" if self.open_up else "as little as"
        assert self.open_start is not None  # an ended drift was open
        return (f"Your {subject.name} ran {worst} {percent(share)} of the time from "
                f"{subject.when(self.open_start)} to {subject.when(end, self.open_start)}; it "
                f"usually runs about {usual} of the time.")
