"""Forecast evaluation: replay a dataset through the flow's operators and the per-home
forecaster, and score what it issued against what happened.

Definitions (the README's "Forecasts" section repeats them):

* **Scored slots.** A forecast is scored when its target slot has an actual (enough coverage,
  see ``pipeline.insights.forecast.slotting``), both seasonal-naive baselines have an actual for their
  slot, and no stuck run (``pipeline.evaluation.stuck_runs``) touches the target. Rows the dataset's
  publisher filled in are dropped before the replay (``--skip-flag-col``). The model and both
  baselines are scored on exactly the same slots.
* **Baselines.** ``naive_day``: the actual of the same local wall-clock slot one day before the
  target; ``naive_week``: seven days before. Computed here from the actuals, with the same local
  clock as the forecaster (DST-correct).
* **Horizon.** ``horizon_h`` is the time from the issue to the END of the target slot. The
  day-ahead figure is ``horizon_h == 24`` at resolution 60: the hour that ends 24 hours after the
  forecast was issued, the hardest hourly reading.
* **Skill** = model MAE / the better (lower) of the two naive MAEs; below 1 beats both.
* **MAPE** is over the scored slots whose actual is at least 10 % of the home's mean actual at
  that resolution: near-zero actuals (a home away, a meter reading 0) would make any percentage
  error explode, so they are left out of MAPE only (MAE and RMSE keep them).
* **Coverage** is the share of scored actuals inside the issued 80 % interval.
* **Model bytes** is ``len(pickle.dumps(forecaster))`` at the end of the home's replay, when its
  histories are full.
"""

from __future__ import annotations

import math
import pickle
import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import cast

import numpy as np
import polars as pl

from pipeline.evaluation.pool import spawn_pool
from pipeline.evaluation.replay import home_windows, split_homes
from pipeline.evaluation.stuck_runs import StuckRule, excluded_slots, stuck_runs
from pipeline.insights.forecast import ForecastSettings, HomeForecaster
from pipeline.insights.forecast.calendar import LocalClock
from pipeline.insights.forecast.models import BAND_EDGES, CANDIDATES
from pipeline.insights.forecast.slotting import MinuteSlotter
from pipeline.records import Forecast
from pipeline.settings import WindowSettings

DEFAULT_STUCK = StuckRule()
DAY_AHEAD_H = 24  # the day-ahead reading: resolution 60, horizon 24 h
MAPE_FLOOR_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class ForecastEvalRow:
    home_id: str
    resolution: int  # minutes
    horizon_h: float
    n: int  # scored forecasts
    mae: float
    rmse: float
    mape: float  # percent, over actuals >= 10 % of the home's mean (NaN if none)
    naive_day_mae: float
    naive_week_mae: float
    naive_day_rmse: float
    naive_week_rmse: float
    skill: float  # mae / min(naive_day_mae, naive_week_mae)
    coverage_80: float
    model: str  # the candidate that issued most of these forecasts
    model_share: float  # and its share of them


@dataclass(frozen=True, slots=True)
class HomeEvaluation:
    home_id: str
    model_bytes: int
    minutes: int  # home minutes replayed
    stuck_runs: int
    excluded_slots: int  # hourly slots touched by stuck runs
    winners: tuple[str, ...]  # per resolution and horizon band at the end: "60:0-1h=profile_median"


@dataclass(slots=True)
class ForecastEvaluation:
    rows: list[ForecastEvalRow] = field(default_factory=list)
    homes: list[HomeEvaluation] = field(default_factory=list)

    def summary(self) -> list[ForecastEvalRow]:
        """Median over homes per resolution and horizon (one row each), when there are several."""
        if len({r.home_id for r in self.rows}) < 2:
            return []
        out = []
        keys = sorted({(r.resolution, r.horizon_h) for r in self.rows}, key=lambda k: (-k[0], k[1]))
        for res, h in keys:
            rows = [r for r in self.rows if (r.resolution, r.horizon_h) == (res, h)]
            med = partial(_median_of, rows)
            models = Counter(r.model for r in rows).most_common(1)[0]
            out.append(ForecastEvalRow(
                f"median of {len(rows)} homes", res, h, sum(r.n for r in rows), med("mae"),
                med("rmse"), med("mape"), med("naive_day_mae"), med("naive_week_mae"),
                med("naive_day_rmse"), med("naive_week_rmse"), med("skill"), med("coverage_80"),
                models[0], models[1] / len(rows)))
        return out


def _median_of(rows: list[ForecastEvalRow], name: str) -> float:
    values = [getattr(r, name) for r in rows if math.isfinite(getattr(r, name))]
    return statistics.median(values) if values else math.nan


def evaluate_forecasts(frame: pl.DataFrame, settings: ForecastSettings,
                       horizons_h: tuple[float, ...] = (1, 6, 12, 24),
                       stuck: StuckRule = DEFAULT_STUCK,
                       window: WindowSettings | None = None,
                       jobs: int = 1,
                       on_rows: Callable[[int], None] = lambda n: None,
                       on_home: Callable[[HomeEvaluation], None] = lambda h: None) -> ForecastEvaluation:
    """Replay ``frame`` (a ``pipeline.ingest.tabular.readings_frame``) home by home and score the
    forecasts at ``horizons_h`` (hours; at resolution 15 also the first quarter hour). Homes are
    independent, so ``jobs > 1`` evaluates that many at once in worker processes."""
    result = ForecastEvaluation()
    homes = split_homes(frame)

    def collect(rows: list[ForecastEvalRow], home: HomeEvaluation) -> None:
        result.rows.extend(rows)
        result.homes.append(home)
        on_home(home)

    if jobs <= 1 or len(homes) < 2:
        for home_id, readings in homes:
            collect(*_evaluate_home(home_id, readings, settings, horizons_h, stuck, window, on_rows))
    else:
        with spawn_pool(min(jobs, len(homes))) as pool:
            futures = {pool.submit(_evaluate_home, home_id, readings, settings, horizons_h, stuck,
                                   window): readings.height for home_id, readings in homes}
            for future in as_completed(futures):
                collect(*future.result())
                on_rows(futures[future])
    result.rows.sort(key=lambda r: (r.home_id, -r.resolution, r.horizon_h))
    result.homes.sort(key=lambda h: h.home_id)
    return result


def _evaluate_home(home_id: str, readings: pl.DataFrame, settings: ForecastSettings,
                   horizons_h: tuple[float, ...], stuck: StuckRule, window: WindowSettings | None,
                   on_rows: Callable[[int], None] = lambda n: None,
                   ) -> tuple[list[ForecastEvalRow], HomeEvaluation]:
    forecaster = HomeForecaster(home_id, settings)
    actual_slots = MinuteSlotter(settings.resolutions, settings.min_coverage, settings.max_hold_min)
    wanted = {res: _horizons_for(res, horizons_h, settings) for res in settings.resolutions}
    issued: dict[tuple[int, int], list[Forecast]] = {
        (res, h): [] for res, hs in wanted.items() for h in hs}
    actuals: dict[int, dict[int, float]] = {res: {} for res in settings.resolutions}
    minutes = 0
    for window_ in home_windows(readings, window, on_rows):
        minutes += 1
        for item in forecaster.add(window_):
            if isinstance(item, Forecast):
                bucket = issued.get((item.resolution_min, item.horizon_min))
                if bucket is not None:
                    bucket.append(item)
        for slot in actual_slots.add(int(window_.bucket.timestamp()) // 60, window_.mean_power_w):
            if slot.value is not None:
                actuals[slot.resolution][slot.start_min] = slot.value
    runs = stuck_runs(readings, stuck)
    hold = _usual_step(readings)
    clock = LocalClock(settings.timezone)
    rows = []
    for (res, horizon), forecasts in issued.items():
        skip = excluded_slots(runs, res, hold)
        row = _score(home_id, res, horizon, forecasts, actuals[res], skip, clock)
        if row is not None:
            rows.append(row)
    winners = tuple(
        f"{res}:{_band_label(b)}={CANDIDATES[engine.selector.best(b)]}"
        for res, engine in forecaster.engines.items() for b in range(len(BAND_EDGES)))
    home = HomeEvaluation(home_id, len(pickle.dumps(forecaster)), minutes, len(runs),
                          len(excluded_slots(runs, 60, hold)), winners)
    return rows, home


def _horizons_for(res: int, horizons_h: tuple[float, ...], settings: ForecastSettings) -> list[int]:
    hs = {int(round(h * 60)) for h in horizons_h}
    if res < 60:
        hs.add(res)
    return sorted(h for h in hs if h % res == 0 and res <= h <= settings.horizon_hours * 60)


def _usual_step(readings: pl.DataFrame) -> timedelta:
    steps = readings["ts"].diff().drop_nulls()
    steps = steps.filter(steps > timedelta(0))
    return cast(timedelta, steps.median()) if steps.len() else timedelta(minutes=1)  # a Duration column


def _band_label(band: int) -> str:
    lo = 0 if band == 0 else BAND_EDGES[band - 1]
    return f"{lo / 60:g}-{BAND_EDGES[band] / 60:g}h"


def _score(home_id: str, res: int, horizon: int, forecasts: list[Forecast], actual: dict[int, float],
           skip: set[int], clock: LocalClock) -> ForecastEvalRow | None:
    per_day = 1440 // res
    by_local = {clock.local_slot(start, res): value for start, value in sorted(actual.items())}
    y, f, lo, hi, nd, nw, models = [], [], [], [], [], [], []
    for fc in forecasts:
        start = int(fc.target_ts.timestamp()) // 60
        value = actual.get(start)
        if value is None or start in skip:
            continue
        local = clock.local_slot(start, res)
        day, week = by_local.get(local - per_day), by_local.get(local - 7 * per_day)
        if day is None or week is None:
            continue
        y.append(value)
        f.append(fc.yhat_w)
        lo.append(fc.lower_w)
        hi.append(fc.upper_w)
        nd.append(day)
        nw.append(week)
        models.append(fc.model)
    if not y:
        return None
    y_, f_, nd_, nw_ = (np.array(a) for a in (y, f, nd, nw))
    mae, naive_day, naive_week = (float(np.mean(np.abs(y_ - p))) for p in (f_, nd_, nw_))
    rmse, nd_rmse, nw_rmse = (float(np.sqrt(np.mean((y_ - p) ** 2))) for p in (f_, nd_, nw_))
    floor = MAPE_FLOOR_SHARE * float(np.mean(y_))
    ok = y_ >= floor
    mape = float(100 * np.mean(np.abs(y_[ok] - f_[ok]) / y_[ok])) if ok.any() and floor > 0 else math.nan
    covered = float(np.mean((np.array(lo) <= y_) & (y_ <= np.array(hi))))
    best_naive = min(naive_day, naive_week)
    model, count = Counter(models).most_common(1)[0]
    return ForecastEvalRow(home_id, res, horizon / 60, len(y), mae, rmse, mape, naive_day,
                           naive_week, nd_rmse, nw_rmse,
                           mae / best_naive if best_naive > 0 else math.inf, covered, model,
                           count / len(y))
