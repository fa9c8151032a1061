"""``HomeForecaster``: one home's online forecasting, fed its 1-minute totals.

    HomeWindow minutes ─▶ MinuteSlotter ─▶ completed 15-min and 1-hour slots ─▶ learn and score
                                    └─ this home's minute of a new hour ─▶ issue forecasts + scores

The hour's work waits for the home's own minute of the hour (0-15 min after the boundary, by a
hash of its id) so a worker's homes do not all do it in the same minute; it reads only what was
known at the boundary, so the forecasts are the same as if issued there.

Pure and picklable: Bytewax keeps one per home as state, and its snapshot is ``pickle.dumps``.
Everything is event time; the forecaster never reads a clock.
"""

from __future__ import annotations

from pipeline.insights.forecast.calendar import LocalClock
from pipeline.insights.forecast.engine import ResolutionForecaster
from pipeline.insights.forecast.settings import ForecastSettings
from pipeline.insights.forecast.slotting import MinuteSlotter
from pipeline.records import Forecast, ForecastScore, HomeWindow
from pipeline.settings import home_offset_min


class HomeForecaster:
    """Forecasts of one home's mean power, every hour, for the next 24 hourly and 96 quarter-hour
    slots, with 80 % intervals, scored against two seasonal-naive baselines as actuals arrive."""

    def __init__(self, home_id: str, settings: ForecastSettings) -> None:
        self.home_id = home_id
        self.settings = settings
        self.clock = LocalClock(settings.timezone)
        self.slotter = MinuteSlotter(settings.resolutions, settings.min_coverage, settings.max_hold_min)
        self.engines = {res: ResolutionForecaster(res, settings) for res in settings.resolutions}
        self._link_histories()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._link_histories()  # a snapshot from before the links

    def _link_histories(self) -> None:
        """Each history is snapshotted against the finest one whose slots divide its own (the
        hourly against the quarter-hourly): see ``SlotRing.basis``."""
        finest = min(self.engines)
        for res, engine in self.engines.items():
            if res != finest and res % finest == 0:
                engine.history.basis = (self.engines[finest].history, res // finest)

    # The closed slots and the boundary of an hour whose work waits for this home's minute of the
    # hour (class default: snapshots from before the stagger load without it).
    deferred: tuple[list, int] | None = None

    @property
    def issue_delay_min(self) -> int:
        """Minutes after each hour boundary at which this home learns and issues. A stable hash,
        so a restarted flow or another worker gives the same home the same minute."""
        return home_offset_min(self.home_id, self.settings.issue_spread_min)

    def add(self, window: HomeWindow) -> list[Forecast | ForecastScore]:
        """Take one home minute. At this home's minute of a new hour (``issue_delay_min`` after
        the boundary), return that hour's forecasts (both resolutions, made at the boundary) and
        the current scores; otherwise nothing."""
        minute = int(window.bucket.timestamp()) // 60
        closed = self.slotter.add(minute, window.mean_power_w)
        out: list[Forecast | ForecastScore] = []
        if closed:
            if self.deferred is not None:  # a later hour closed first (data skipped this one's minute)
                out.extend(self._hour(*self.deferred))
            self.deferred = (closed, minute - minute % 60)
        if self.deferred is not None and minute >= self.deferred[1] + self.issue_delay_min:
            out.extend(self._hour(*self.deferred))
            self.deferred = None
        return out

    def _hour(self, closed: list, made: int) -> list[Forecast | ForecastScore]:
        for res, engine in self.engines.items():
            engine.close_slots([(s.start_min, s.value) for s in closed if s.resolution == res], self.clock)
        out: list[Forecast | ForecastScore] = []
        for engine in self.engines.values():
            out.extend(engine.issue(made, self.clock, self.home_id))
        for engine in self.engines.values():
            out.extend(engine.scores(self.home_id, made))
        return out
