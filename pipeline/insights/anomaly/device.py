"""Per-device anomaly detection over the device's 1-minute windows.

One ``DeviceDetector`` per (home, device), fed that device's ``DeviceWindow``s in bucket order
(gaps allowed); a bucket at or before the last one seen (a re-emission) is ignored, so nothing is
learned twice. It returns ``Anomaly`` records: each anomaly is emitted when it opens and again,
with ``ended_at``, when it clears; at most one is open per kind.

Kinds judged here, each in its own module: SILENT (every device), COUNTER_BACKWARDS (devices with a
counter), FLAT_LINE (every device), LONG_RUNNING (appliances and EV chargers), DUTY_CYCLE_DRIFT
(appliances that cycle). HIGH_CONSUMPTION is judged on the home's total (``HomeDetector``): a
meter's consumption is its home's, and a single appliance's use is too intermittent for an
hour-of-day profile (its faults show as LONG_RUNNING instead).

Warm-up, before which a kind never alerts (event time from the first window): FLAT_LINE 2 days,
SILENT 1 day and 100 gaps, LONG_RUNNING 3 days and 10 on-periods, DUTY_CYCLE_DRIFT 72 complete
hours; COUNTER_BACKWARDS needs none (a reset is a fact, not a deviation).

Live use: call ``check(now)`` when ``next_due()`` has passed (wall clock), to open SILENT for a
device that sent nothing. Picklable, with bounded state (a few KB: see the tests).
"""

from __future__ import annotations

from datetime import datetime

from river import stats

from pipeline.insights.anomaly.clock import LocalClock
from pipeline.insights.anomaly.counter import CounterBackwards
from pipeline.insights.anomaly.duty import DutyCycle
from pipeline.insights.anomaly.flat import FlatLine
from pipeline.insights.anomaly.learned import learned
from pipeline.insights.anomaly.runs import LongRunning
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.silence import Silence
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import device_name
from pipeline.records import Anomaly, DeviceKind, DeviceWindow

_RUNS_KINDS = (DeviceKind.APPLIANCE, DeviceKind.EV)


class DeviceDetector:
    def __init__(self, settings: AnomalySettings = AnomalySettings(), tz: str = "UTC") -> None:
        self.settings = settings
        self.subject = Subject("", "", "device", LocalClock(tz))
        self.kind = DeviceKind.APPLIANCE
        self.last_ts: float | None = None
        self.standby = stats.Quantile(0.05)
        self.silence = Silence(settings)
        self.counter = CounterBackwards(settings)
        self.flat = FlatLine(settings)
        self.runs = LongRunning(settings)
        self.duty = DutyCycle(settings)
        self.windows = 0
        self._on_w = settings.on_min_w

    def on_threshold_w(self) -> float:
        """Above this a window is "on": twice the standby level, and at least ``on_min_w``."""
        return self._on_w

    def add(self, window: DeviceWindow, now_wall: datetime | None = None) -> list[Anomaly]:
        ts = window.bucket.timestamp()
        if self.last_ts is not None and ts <= self.last_ts:
            return []
        if self.last_ts is None:
            self.kind = window.kind
            self.subject = Subject(window.home_id, window.device_id,
                                   device_name(window.device_id, window.kind), self.subject.clock)
        self.last_ts = ts
        subject = self.subject
        out = self.silence.add(subject, ts, now_wall)
        if window.counter_resets or self.counter.open_start is not None:
            out.extend(self.counter.add(subject, ts, window.counter_resets))
        out.extend(self.flat.add(subject, ts, window, self.silence.limit(), self.silence.usual_gap()))
        if self.kind in _RUNS_KINDS:
            on = window.mean_power_w > self._on_w
            out.extend(self.runs.add(subject, ts, on))
            if self.kind == DeviceKind.APPLIANCE:
                out.extend(self.duty.add(subject, ts, on))
        self.standby.update(window.mean_power_w)
        self.windows += 1
        if self.windows % 32 == 1:  # standby moves slowly; refreshed every 32 windows
            self._on_w = max(self.settings.on_min_w, 2 * learned(self.standby))
        return out

    def next_due(self) -> datetime | None:
        """When ``check`` may open SILENT (wall clock), or None while nothing can be due."""
        return self.silence.next_due()

    def check(self, now_wall: datetime) -> list[Anomaly]:
        return self.silence.check(self.subject, now_wall)
