"""Per-home anomaly detection over the home's 1-minute totals (``HomeWindow``).

One ``HomeDetector`` per home, fed the home's windows in bucket order. A re-emitted bucket (the
home aggregator corrects a minute when a device's window arrives late) replaces the earlier value in
the running sums; nothing is learned or judged twice. Anomalies carry ``device_id == ""``.

It judges HIGH_CONSUMPTION (see ``consumption.py``) on the home's local clock (``tz``, an IANA
name; daylight saving included). Warm-up: an hour of day is judged once 7 complete hours of it
were learned, so about a week.
"""

from __future__ import annotations

from pipeline.insights.anomaly.clock import LocalClock
from pipeline.insights.anomaly.consumption import HighConsumption
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.records import Anomaly, HomeWindow


class HomeDetector:
    def __init__(self, settings: AnomalySettings = AnomalySettings(), tz: str = "UTC") -> None:
        self.settings = settings
        self.subject = Subject("", "", "home", LocalClock(tz))
        self.high = HighConsumption(settings)

    def add(self, window: HomeWindow) -> list[Anomaly]:
        if not self.subject.home_id:
            self.subject = Subject(window.home_id, "", "home", self.subject.clock)
        return self.high.add(self.subject, window.bucket.timestamp(), window.energy_wh, window.mean_power_w)
