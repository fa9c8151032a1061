"""LONG_RUNNING: an appliance on for far longer than it ever usually runs.

An on-period starts at the first "on" window and ends when the device has been off (or silent) for
longer than ``run_bridge_s``, so a washing machine's pauses do not split its cycle. The lengths of
last ``long_history_runs`` on-periods feed an exact rolling quantile (River's
``RollingQuantile``; a P² estimate is too jumpy over the few dozen runs a washing machine makes in
a few months); an on-period longer than max(``long_min_s``, ``long_factor`` x that quantile)
opens the anomaly, at the on-period's start, and its end closes it. Periods that alerted are not
learned.

Score: the on-period's length divided by the usual long run (the learned quantile).
"""

from __future__ import annotations

from pipeline.insights.anomaly.learned import learned
from pipeline.insights.anomaly.rolling import RollingQuantile, compact
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import duration
from pipeline.records import Anomaly, AnomalyKind


class LongRunning:
    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.lengths = RollingQuantile(q=settings.long_quantile, window_size=settings.long_history_runs)
        self.runs = 0
        self.first_ts: float | None = None
        self.run_start: float | None = None
        self.last_on: float | None = None
        self.open_usual: float | None = None  # set while an anomaly is open

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lengths = compact(self.lengths)  # River's own, before

    def usual(self) -> float | None:
        return self.lengths.get() if self.runs else None

    def threshold(self) -> float | None:
        s = self.settings
        if self.runs < s.long_warmup_runs:
            return None
        return max(s.long_min_s, s.long_factor * learned(self.lengths))

    def add(self, subject: Subject, ts: float, on: bool) -> list[Anomaly]:
        if self.first_ts is None:
            self.first_ts = ts
        out: list[Anomaly] = []
        if (self.run_start is not None and self.last_on is not None  # a run is open
                and ts - self.last_on > self.settings.run_bridge_s):
            out.extend(self._end_run(subject))
        if not on:
            return out
        if self.run_start is None:
            self.run_start = ts
        self.last_on = ts
        if self.open_usual is None:
            limit = self.threshold()
            length = ts + self.settings.window_s - self.run_start
            if (limit is not None and length > limit
                    and ts - self.first_ts >= self.settings.long_warmup_s):
                self.open_usual = learned(self.lengths)
                out.append(subject.anomaly(
                    AnomalyKind.LONG_RUNNING, self.run_start, None, length / self.open_usual,
                    f"Your {subject.name} has been on for {duration(length)} (since "
                    f"{subject.when(self.run_start, ts)}); it usually runs for under "
                    f"{duration(self.open_usual, round_up=True)}."))
        return out

    def _end_run(self, subject: Subject) -> list[Anomaly]:
        assert self.run_start is not None and self.last_on is not None  # called inside a run
        start, end = self.run_start, self.last_on + self.settings.window_s
        length = end - start
        self.run_start = self.last_on = None
        if self.open_usual is None:
            self.lengths.update(length)
            self.runs += 1
            return []
        usual, self.open_usual = self.open_usual, None
        return [subject.anomaly(
            AnomalyKind.LONG_RUNNING, start, end, length / usual,
            f"Your {subject.name} was on for {duration(length)} ({subject.when(start)} to "
            f"{subject.when(end, start)}); it usually runs for under {duration(usual, round_up=True)}.")]
