"""COUNTER_BACKWARDS: a device's energy counter was reset.

The windower tells a reset (two samples in a row below the last trusted value) from a one-sample
glitch and counts resets per window (``DeviceWindow.counter_resets``); a glitch never reaches here.
The anomaly opens at the first reset and stays open while resets keep coming (a device that keeps
rebooting makes one anomaly, not a storm); ``counter_quiet_s`` without one clears it.

Score: the number of resets while it was open.
"""

from __future__ import annotations

from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.records import Anomaly, AnomalyKind


class CounterBackwards:
    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.open_start: float | None = None
        self.last_reset = 0.0
        self.resets = 0

    def add(self, subject: Subject, ts: float, resets: int) -> list[Anomaly]:
        if resets:
            self.last_reset = ts
            if self.open_start is not None:
                self.resets += resets
                return []
            self.open_start, self.resets = ts, resets
            return [subject.anomaly(
                AnomalyKind.COUNTER_BACKWARDS, ts, None, resets,
                f"The energy counter of your {subject.name} went backwards at {subject.when(ts)} "
                f"(it was reset); its energy is counted on from the new value.")]
        if self.open_start is not None and ts - self.last_reset >= self.settings.counter_quiet_s:
            start, end = self.open_start, self.last_reset + self.settings.window_s
            self.open_start = None
            times = "once" if self.resets == 1 else f"{self.resets} times"
            return [subject.anomaly(
                AnomalyKind.COUNTER_BACKWARDS, start, end, self.resets,
                f"The energy counter of your {subject.name} went backwards {times} between "
                f"{subject.when(start)} and {subject.when(end, start)} (reset); its energy is counted "
                f"on from the new values.")]
        return []
