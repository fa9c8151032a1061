"""What the flow learns about one home, in two picklable state objects.

The flow keys the 1-minute device and home windows by home and hands each to
:class:`HomeInsights`, which feeds them to the home's anomaly detectors (one for the home's total,
one per device, their silences grouped when the whole home goes quiet), its recommender and the
minute-by-minute half of its forecaster, and returns what they produce: ``Anomaly`` and
``Recommendation`` records for the store, and an :class:`HourDue` once an hour. The flow keys
those by home again and hands them to :class:`HomeForecasts`, the hourly half of the forecaster
(history, models, intervals, scores), which returns ``Forecast`` and ``ForecastScore`` records.

Two states per home because they change at different rates: Bytewax snapshots a key's state at
every epoch in which the key saw a record, so a home's minute rewrites only what changes every
minute (about half the home's state), and its forecasting history and models are written once an
hour. :func:`run_both` feeds a window through both in one place (tests, benchmarks). The models
inside stay independent and testable alone. The tariff book is configuration: it is passed to
every call and never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.energy.tariff import TariffBook
from pipeline.insights.anomaly import AnomalySettings, DeviceDetector, HomeDetector, HomeOutage
from pipeline.insights.forecast import ForecastSettings
from pipeline.insights.forecast.home import ClosedHour, HourCloser, HourlyForecaster, split_one_object_layout
from pipeline.insights.packing import pack, unpack
from pipeline.insights.recommend import HomeRecommender
from pipeline.records import Anomaly, DeviceWindow, Forecast, ForecastScore, HomeWindow, Recommendation
from pipeline.settings import RecommendSettings, reduce_settings

Insight = Forecast | ForecastScore | Anomaly | Recommendation


@dataclass(frozen=True, slots=True)
class HourDue:
    """A closed hour of one home, from the insights step to the forecasts step."""

    home_id: str
    timezone: str
    hour: ClosedHour
    # Once per home, the hourly forecaster of a snapshot written when one step held all of a
    # home's insights, handed over with the first hour due after the upgrade.
    handover: HourlyForecaster | None = None


@dataclass(frozen=True, slots=True)
class InsightSettings:
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    forecasts: bool = True
    anomalies: bool = True
    recommendations: bool = True

    def __reduce__(self):
        return reduce_settings(self)


class HomeInsights:
    """The anomaly detectors, the recommender and the hour closer of one home's forecaster."""

    def __init__(self, home_id: str, timezone: str = "UTC",
                 settings: InsightSettings | None = None) -> None:
        self.home_id = home_id
        self.timezone = timezone
        self.settings = settings or InsightSettings()
        self.hours = HourCloser(home_id, ForecastSettings(timezone=timezone))
        self.home_detector = HomeDetector(self.settings.anomaly, timezone)
        self.device_detectors: dict[str, DeviceDetector] = {}
        # Groups the devices' SILENT anomalies when the whole home goes quiet (a power cut).
        self.outage = HomeOutage(self.settings.anomaly)
        # Made on the first window that can be priced: without a tariff book it would only hold
        # about 30 KB of empty history per home.
        self.recommender: HomeRecommender | None = None
        self.handover: HourlyForecaster | None = None

    def __getstate__(self) -> bytes:
        # The recovery snapshot: compressed, its arrays byte-shuffled (pipeline/insights/packing.py).
        return pack(self.__dict__)

    def __setstate__(self, state: bytes | dict) -> None:
        # A dict is a snapshot from before packing (each part converts its own old layout).
        self.__dict__.update(unpack(state) if isinstance(state, bytes) else state)
        if "outage" not in self.__dict__:  # from before home outages were grouped (issue 14)
            self.outage = HomeOutage(self.settings.anomaly)
        if "forecaster" in self.__dict__:
            self._split_forecaster()

    def _split_forecaster(self) -> None:
        """A snapshot from when this object held the whole forecaster: keep its hour closer and
        hand its hourly half to the forecasts step with the next hour due. The recommender's
        hourly ring was snapshotted against that half's history; it is restored by now, and
        snapshotted on its own from here on (``HourRings``)."""
        forecaster = self.__dict__.pop("forecaster")
        halves = forecaster.__dict__
        if "slotter" in halves:  # unpickled before its class converted it
            halves = split_one_object_layout(halves)
        self.hours = halves["closer"]
        self.handover = halves["hourly"] if self.settings.forecasts else None

    def add(self, window: DeviceWindow | HomeWindow, book: TariffBook | None,
            now_wall: datetime | None = None) -> list[Insight | HourDue]:
        """Feed one window. ``now_wall`` is the wall clock in a live flow (a device heard from
        again closes its SILENT anomaly at that time); None when replaying history. Without a
        tariff book nothing can be priced, so no recommendation is made."""
        s = self.settings
        out: list[Insight | HourDue] = []
        priced_by = book if s.recommendations else None
        if isinstance(window, HomeWindow):
            if s.forecasts:
                for hour in self.hours.add(window):
                    out.append(HourDue(self.home_id, self.timezone, hour, self.handover))
                    self.handover = None
            if s.anomalies:
                out.extend(self.home_detector.add(window))
            if priced_by is not None:
                out.extend(self._recommender().add_home_window(window, priced_by))
            return out
        if s.anomalies:
            out.extend(self.outage.add(self.device_detectors, window, self.timezone, now_wall))
        if priced_by is not None:
            out.extend(self._recommender().add_device_window(window, priced_by))
        return out

    def _recommender(self) -> HomeRecommender:
        if self.recommender is None:
            self.recommender = HomeRecommender(self.home_id, self.settings.recommend)
        return self.recommender

    def next_due(self) -> datetime | None:
        """When :meth:`check` may have something to say (a device may have gone silent)."""
        due = [d for d in (det.next_due() for det in self.device_detectors.values()) if d is not None]
        return min(due) if due else None

    def check(self, now_wall: datetime) -> list[Anomaly]:
        """Wall-clock checks: devices (meters) that stopped reporting, one anomaly of the home
        when most of them stopped together."""
        return self.outage.check(self.device_detectors, now_wall)


class HomeForecasts:
    """The state of the forecasts step: one home's :class:`HourlyForecaster`, fed its hours due."""

    def __init__(self, home_id: str, timezone: str = "UTC", forecaster: HourlyForecaster | None = None) -> None:
        self.home_id = home_id
        self.forecaster = forecaster or HourlyForecaster(home_id, ForecastSettings(timezone=timezone))

    def add(self, due: HourDue) -> list[Forecast | ForecastScore]:
        if due.handover is not None:
            self.forecaster = due.handover
        return self.forecaster.hour(due.hour)

    @classmethod
    def for_hour(cls, due: HourDue) -> HomeForecasts:
        return cls(due.home_id, due.timezone, due.handover)  # a handed-over forecaster is not made twice


def run_both(insights: HomeInsights, forecasts: HomeForecasts | None, window: DeviceWindow | HomeWindow,
             book: TariffBook | None, now_wall: datetime | None = None) -> tuple[list[Insight], HomeForecasts | None]:
    """One window through a home's two states, as the flow's two steps would take it; returns
    the insights and the forecasts state (made on the first hour due)."""
    out: list[Insight] = []
    for item in insights.add(window, book, now_wall):
        if isinstance(item, HourDue):
            forecasts = forecasts or HomeForecasts.for_hour(item)
            out.extend(forecasts.add(item))
        else:
            out.append(item)
    return out, forecasts
