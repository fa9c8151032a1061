"""``HomeForecaster``: one home's online forecasting, fed its 1-minute totals.

    HomeWindow minutes ─▶ MinuteSlotter ─▶ completed 15-min and 1-hour slots ─▶ learn and score
                                    └─ first minute of a new hour ─▶ issue forecasts + scores

Pure and picklable: Bytewax keeps one per home as state, and its snapshot is ``pickle.dumps``.
Everything is event time; the forecaster never reads a clock.
"""

from __future__ import annotations

from pipeline.forecast.calendar import LocalClock
from pipeline.forecast.engine import ResolutionForecaster
from pipeline.forecast.settings import ForecastSettings
from pipeline.forecast.slotting import MinuteSlotter
from pipeline.records import Forecast, ForecastScore, HomeWindow


class HomeForecaster:
    """Forecasts of one home's mean power, every hour, for the next 24 hourly and 96 quarter-hour
    slots, with 80 % intervals, scored against two seasonal-naive baselines as actuals arrive."""

    def __init__(self, home_id: str, settings: ForecastSettings) -> None:
        self.home_id = home_id
        self.settings = settings
        self.clock = LocalClock(settings.timezone)
        self.slotter = MinuteSlotter(settings.resolutions, settings.min_coverage, settings.max_hold_min)
        self.engines = {res: ResolutionForecaster(res, settings) for res in settings.resolutions}

    def add(self, window: HomeWindow) -> list[Forecast | ForecastScore]:
        """Take one home minute. At the first minute of a new hour, return that hour's forecasts
        (both resolutions) and the current scores; otherwise nothing."""
        minute = int(window.bucket.timestamp()) // 60
        closed = self.slotter.add(minute, window.mean_power_w)
        if not closed:
            return []
        for res, engine in self.engines.items():
            engine.close_slots([(s.start_min, s.value) for s in closed if s.resolution == res], self.clock)
        made = minute - minute % 60
        out: list[Forecast | ForecastScore] = []
        for engine in self.engines.values():
            out.extend(engine.issue(made, self.clock, self.home_id))
        for engine in self.engines.values():
            out.extend(engine.scores(self.home_id, made))
        return out
