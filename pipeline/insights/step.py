"""What the flow learns about one home, in one picklable state object.

The flow keys the 1-minute device and home windows by home and hands each to
:class:`HomeInsights`, which feeds them to the home's forecaster, its anomaly detectors (one for
the home's total, one per device, their silences grouped when the whole home goes quiet) and its recommender, and returns what they produce:
``Forecast``, ``ForecastScore``, ``Anomaly`` and ``Recommendation`` records for the store.

One state per home (rather than one step per model) keeps the routing to a single key and the
recovery snapshot of a home in one piece; the models inside stay independent and testable alone.
The tariff book is configuration: it is passed to every call and never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.energy.tariff import TariffBook
from pipeline.insights.anomaly import AnomalySettings, DeviceDetector, HomeDetector, HomeOutage
from pipeline.insights.forecast import ForecastSettings, HomeForecaster
from pipeline.insights.packing import pack, unpack
from pipeline.insights.recommend import HomeRecommender
from pipeline.records import Anomaly, DeviceWindow, Forecast, ForecastScore, HomeWindow, Recommendation
from pipeline.settings import RecommendSettings, reduce_settings

Insight = Forecast | ForecastScore | Anomaly | Recommendation


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
    """The forecaster, anomaly detectors and recommender of one home."""

    def __init__(self, home_id: str, timezone: str = "UTC",
                 settings: InsightSettings | None = None) -> None:
        self.home_id = home_id
        self.timezone = timezone
        self.settings = settings or InsightSettings()
        self.forecaster = HomeForecaster(home_id, ForecastSettings(timezone=timezone))
        self.home_detector = HomeDetector(self.settings.anomaly, timezone)
        self.device_detectors: dict[str, DeviceDetector] = {}
        # Groups the devices' SILENT anomalies when the whole home goes quiet (a power cut).
        self.outage = HomeOutage(self.settings.anomaly)
        # Made on the first window that can be priced: without a tariff book it would only hold
        # about 30 KB of empty history per home.
        self.recommender: HomeRecommender | None = None

    def __getstate__(self) -> bytes:
        # The recovery snapshot: compressed, its arrays byte-shuffled (pipeline/insights/packing.py).
        return pack(self.__dict__)

    def __setstate__(self, state: bytes | dict) -> None:
        if isinstance(state, bytes):
            self.__dict__.update(unpack(state))
            self._since_outages()
            return
        # A snapshot from before packing (each part converts its own old layout).
        self.__dict__.update(state)
        self._since_outages()
        if self.recommender is not None:
            self._link(self.recommender)

    def _since_outages(self) -> None:
        # A snapshot from before home outages were grouped (issue 14) has no outage state.
        if "outage" not in self.__dict__:
            self.outage = HomeOutage(self.settings.anomaly)

    def _link(self, recommender: HomeRecommender) -> None:
        """The home's imported energy per hour is snapshotted against its hourly forecasting
        history, the same hours' mean power (see ``HourRings.basis``)."""
        engine = self.forecaster.engines.get(60)
        if self.settings.forecasts and engine is not None:
            recommender.home.hourly.basis = ("imported", engine.history, self.forecaster.clock)

    def add(self, window: DeviceWindow | HomeWindow, book: TariffBook | None,
            now_wall: datetime | None = None) -> list[Insight]:
        """Feed one window. ``now_wall`` is the wall clock in a live flow (a device heard from
        again closes its SILENT anomaly at that time); None when replaying history. Without a
        tariff book nothing can be priced, so no recommendation is made."""
        s = self.settings
        out: list[Insight] = []
        priced_by = book if s.recommendations else None
        if isinstance(window, HomeWindow):
            if s.forecasts:
                out.extend(self.forecaster.add(window))
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
            self._link(self.recommender)
        return self.recommender

    def next_due(self) -> datetime | None:
        """When :meth:`check` may have something to say (a device may have gone silent)."""
        due = [d for d in (det.next_due() for det in self.device_detectors.values()) if d is not None]
        return min(due) if due else None

    def check(self, now_wall: datetime) -> list[Anomaly]:
        """Wall-clock checks: devices (meters) that stopped reporting, one anomaly of the home
        when most of them stopped together."""
        return self.outage.check(self.device_detectors, now_wall)
