"""One home's online forecasting, fed its 1-minute totals, in two halves.

    HomeWindow minutes ─▶ HourCloser ─▶ ClosedHour (the hour's 15-min and 1-hour slots, due at
                          (every minute)               this home's minute of the hour)
                                          ─▶ HourlyForecaster ─▶ learn, score, issue forecasts
                                             (once an hour)

The halves change at different rates: the closer every minute (a few hundred bytes), the hourly
models only once an hour (about 20 KB of history, models, intervals and scores). The flow keeps
them in two steps (flows/operators.py) so a recovery epoch rewrites only the closer;
:class:`HomeForecaster` joins them for callers that feed a home's minutes in one place (the
evaluation, tests).

The hour's work waits for the home's own minute of the hour (0-15 min after the boundary, by a
hash of its id) so a worker's homes do not all do it in the same minute; it reads only what was
known at the boundary, so the forecasts are the same as if issued there.

Pure and picklable. Everything is event time; the forecaster never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.insights.forecast.calendar import LocalClock
from pipeline.insights.forecast.engine import ResolutionForecaster
from pipeline.insights.forecast.settings import ForecastSettings
from pipeline.insights.forecast.slotting import ClosedSlot, MinuteSlotter
from pipeline.insights.packing import pack, unpack
from pipeline.records import Forecast, ForecastScore, HomeWindow
from pipeline.settings import home_offset_min


@dataclass(frozen=True, slots=True)
class ClosedHour:
    """The slots of an hour that closed, to be learnt from at the boundary ``made_min``."""

    made_min: int  # UTC epoch minute of the boundary: forecasts are made as of then
    slots: tuple[ClosedSlot, ...]


class HourCloser:
    """The minute-by-minute half: slots the home's minutes and says when an hour's work is due."""

    def __init__(self, home_id: str, settings: ForecastSettings) -> None:
        self.home_id = home_id
        self.settings = settings
        self.slotter = MinuteSlotter(settings.resolutions, settings.min_coverage, settings.max_hold_min)
        # The hour that closed and waits for this home's minute of the hour.
        self.deferred: ClosedHour | None = None

    @property
    def issue_delay_min(self) -> int:
        """Minutes after each hour boundary at which this home learns and issues. A stable hash,
        so a restarted flow or another worker gives the same home the same minute."""
        return home_offset_min(self.home_id, self.settings.issue_spread_min)

    def add(self, window: HomeWindow) -> list[ClosedHour]:
        """Take one home minute; return the hours whose work is due now (usually none; one at
        this home's minute of a new hour; two when data skipped that minute)."""
        minute = int(window.bucket.timestamp()) // 60
        closed = self.slotter.add(minute, window.mean_power_w)
        due: list[ClosedHour] = []
        if closed:
            if self.deferred is not None:  # a later hour closed first (data skipped this one's minute)
                due.append(self.deferred)
            self.deferred = ClosedHour(minute - minute % 60, tuple(closed))
        if self.deferred is not None and minute >= self.deferred.made_min + self.issue_delay_min:
            due.append(self.deferred)
            self.deferred = None
        return due


class HourlyForecaster:
    """The hourly half: per resolution the slot history, the models, the intervals and the scores;
    forecasts of the next 24 hourly and 96 quarter-hour slots with 80 % intervals, scored against
    two seasonal-naive baselines as actuals arrive."""

    def __init__(self, home_id: str, settings: ForecastSettings) -> None:
        self.home_id = home_id
        self.settings = settings
        self.clock = LocalClock(settings.timezone)
        self.engines = {res: ResolutionForecaster(res, settings) for res in settings.resolutions}
        self._link_histories()

    def __getstate__(self) -> bytes:
        # Its own recovery snapshot in the flow: byte-shuffled arrays, compressed (packing.py).
        return pack(self.__dict__)

    def __setstate__(self, state: bytes | dict) -> None:
        self.__dict__.update(unpack(state) if isinstance(state, bytes) else state)
        self._link_histories()  # a snapshot from before the links

    def _link_histories(self) -> None:
        """Each history is snapshotted against the finest one whose slots divide its own (the
        hourly against the quarter-hourly): see ``SlotRing.basis``."""
        finest = min(self.engines)
        for res, engine in self.engines.items():
            if res != finest and res % finest == 0:
                engine.history.basis = (self.engines[finest].history, res // finest)

    def hour(self, due: ClosedHour) -> list[Forecast | ForecastScore]:
        """Learn from the hour's slots, then issue the forecasts made at its boundary and the
        current scores."""
        made = due.made_min
        for res, engine in self.engines.items():
            engine.close_slots([(s.start_min, s.value) for s in due.slots if s.resolution == res], self.clock)
        out: list[Forecast | ForecastScore] = []
        for engine in self.engines.values():
            out.extend(engine.issue(made, self.clock, self.home_id))
        for engine in self.engines.values():
            out.extend(engine.scores(self.home_id, made))
        return out


class HomeForecaster:
    """Both halves of one home's forecasting in one object: feed it the home's minutes, and at
    this home's minute of each new hour it returns that hour's forecasts (both resolutions, made
    at the boundary) and the current scores."""

    def __init__(self, home_id: str, settings: ForecastSettings) -> None:
        self.closer = HourCloser(home_id, settings)
        self.hourly = HourlyForecaster(home_id, settings)

    def __setstate__(self, state: dict) -> None:
        if "slotter" in state:  # pickled before the halves: one object held both
            state = split_one_object_layout(state)
        self.__dict__.update(state)

    @property
    def home_id(self) -> str:
        return self.closer.home_id

    @property
    def engines(self) -> dict[int, ResolutionForecaster]:
        return self.hourly.engines

    @property
    def issue_delay_min(self) -> int:
        return self.closer.issue_delay_min

    def add(self, window: HomeWindow) -> list[Forecast | ForecastScore]:
        out: list[Forecast | ForecastScore] = []
        for due in self.closer.add(window):
            out.extend(self.hourly.hour(due))
        return out


def split_one_object_layout(state: dict) -> dict:
    """A ``HomeForecaster`` pickled when one object held both halves, as the two halves."""
    closer = HourCloser.__new__(HourCloser)
    deferred = state.get("deferred")  # (closed slots, boundary minute) or None
    closer.__dict__.update(home_id=state["home_id"], settings=state["settings"], slotter=state["slotter"],
                           deferred=None if deferred is None else ClosedHour(deferred[1], tuple(deferred[0])))
    hourly = HourlyForecaster.__new__(HourlyForecaster)
    hourly.__setstate__({name: state[name] for name in ("home_id", "settings", "clock", "engines")})
    return {"closer": closer, "hourly": hourly}
