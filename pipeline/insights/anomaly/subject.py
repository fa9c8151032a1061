"""Who an anomaly is about, and the record every detector emits for it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.insights.anomaly.clock import LocalClock
from pipeline.insights.anomaly.text import utc, when
from pipeline.records import Anomaly, AnomalyKind


@dataclass(slots=True)
class Subject:
    home_id: str
    device_id: str  # "" for a home's total
    name: str  # as a homeowner says it: "kettle", "mains meter", "home"
    clock: LocalClock

    def anomaly(self, kind: AnomalyKind, start: float, end: float | None, score: float,
                message: str) -> Anomaly:
        return Anomaly(self.home_id, self.device_id, kind, utc(start), None if end is None else utc(end),
                       float(score), message)

    def when(self, ts: float, reference: float | None = None) -> str:
        return when(self.clock, ts, reference)
