"""SILENT: a device that stopped sending.

The gaps between consecutive windows feed a P² quantile (River ``Quantile``): the device's usual
longest reporting gap. Silence longer than max(``silent_min_s``, ``silent_factor`` x that gap) is
an anomaly that starts at the last window's end plus that limit and ends when a window returns.

Two ways to see it: in the live flow no window comes, so the wall clock must ask (``next_due`` /
``check``, like the windower's idle close); in a replay or an evaluation the next window simply
arrives late and ``add`` emits the anomaly opened and closed at once. Both give the same
``started_at``, the store's key.

Score: the silence divided by the usual longest reporting gap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from river import stats

from pipeline.insights.anomaly.learned import learned
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import duration
from pipeline.records import Anomaly, AnomalyKind


class Silence:
    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.gaps = stats.Quantile(settings.silent_gap_quantile)
        self.n_gaps = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.last_wall: datetime | None = None
        self.open_start: float | None = None  # opened by check() while no window came
        self._usual = float(settings.window_s)
        self._limit = max(settings.silent_min_s, settings.silent_factor * self._usual)

    def usual_gap(self) -> float:
        return self._usual

    def limit(self) -> float:
        return self._limit

    def _learn(self, gap: float) -> None:
        self.gaps.update(gap)
        self.n_gaps += 1
        # The quantile moves slowly; refreshing it every 32 gaps keeps the hot path cheap.
        if self.n_gaps % 32 == 1:
            s = self.settings
            self._usual = learned(self.gaps)
            self._limit = max(s.silent_min_s, s.silent_factor * self._usual)

    def warm(self) -> bool:
        s = self.settings
        if self.first_ts is None or self.last_ts is None:
            return False  # no window yet
        return (self.n_gaps >= s.silent_warmup_gaps
                and self.last_ts - self.first_ts >= s.silent_warmup_s)

    @property
    def _last(self) -> float:
        # Set by the first add(); nothing reads it before (next_due waits for a wall time).
        assert self.last_ts is not None
        return self.last_ts

    def add(self, subject: Subject, ts: float, now_wall: datetime | None) -> list[Anomaly]:
        out: list[Anomaly] = []
        if self.first_ts is None:
            self.first_ts = ts
        elif self.open_start is not None:
            out.append(self._closed(subject, self.open_start, ts))
            self.open_start = None
        else:
            gap = ts - self._last
            silence_start = self._last + self.settings.window_s
            if ts - silence_start >= self._limit and self.warm():
                start = silence_start + self.limit()
                out.append(self._opened(subject, start))
                out.append(self._closed(subject, start, ts))
            else:
                self._learn(gap)
        self.last_ts = ts
        if now_wall is not None:
            self.last_wall = now_wall
        return out

    def next_due(self) -> datetime | None:
        if self.open_start is not None or self.last_wall is None or not self.warm():
            return None
        return self.last_wall + timedelta(seconds=self.limit())

    def check(self, subject: Subject, now_wall: datetime) -> list[Anomaly]:
        due = self.next_due()
        if due is None or now_wall < due:
            return []
        self.open_start = self._last + self.settings.window_s + self.limit()
        return [self._opened(subject, self.open_start)]

    def opened(self, subject: Subject, start: float) -> Anomaly:
        """The record of the SILENT that opened at ``start`` (told later when a home's outage
        held it back: ``outage.py``)."""
        return self._opened(subject, start)

    def _opened(self, subject: Subject, start: float) -> Anomaly:
        since = self._last + self.settings.window_s
        usual = self.usual_gap()
        return subject.anomaly(
            AnomalyKind.SILENT, start, None, (start - since) / usual,
            f"Your {subject.name} has sent nothing since {subject.when(since, start)}; it usually "
            f"reports at least every {duration(usual, round_up=True)}.")

    def _closed(self, subject: Subject, start: float, end: float) -> Anomaly:
        since = self._last + self.settings.window_s
        usual = self.usual_gap()
        return subject.anomaly(
            AnomalyKind.SILENT, start, end, (end - since) / usual,
            f"Your {subject.name} sent nothing from {subject.when(since)} to {subject.when(end, since)} "
            f"({duration(end - since)}); it usually reports at least every "
            f"{duration(usual, round_up=True)}.")
