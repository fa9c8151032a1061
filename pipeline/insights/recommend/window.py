"""The evaluation window every kind reads: the last ``window_days`` of hourly history with
prices, and the helpers of the shift estimate."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from pipeline.energy.optimize import DeferrableLoad, PlanProblem, optimize
from pipeline.energy.tariff import Tariff, TariffKind
from pipeline.insights.recommend.history import QUARTER_S, Run, _OpenRun

if TYPE_CHECKING:
    from pipeline.insights.recommend.recommender import HomeRecommender


@dataclass(slots=True)
class _Window:
    """The evaluated span and its prices: hourly (``*_h``) and per quarter-hour (``*_q``)."""

    tariff: Tariff
    zone: str
    cur: str
    day_end: datetime
    start_s: int
    end_s: int
    first_hour: int
    hours: int
    ahead_hours: int  # quarter prices reach this far past the end, for runs shifted past midnight
    days: int
    import_q: np.ndarray  # the window's quarters only
    import_qx: np.ndarray  # ... and the ones ahead
    export_qx: np.ndarray
    import_h: np.ndarray
    local_hour: np.ndarray
    local_day: np.ndarray

    @staticmethod
    def build(rec: HomeRecommender, tariff: Tariff, end_s: int) -> _Window:
        s = rec.settings
        hours = s.window_days * 24
        ahead = int(math.ceil(max(s.shift_window_h, s.ev_shift_window_h)))
        start_s = end_s - hours * 3600
        ts = pl.datetime_range(datetime.fromtimestamp(start_s, timezone.utc),
                               datetime.fromtimestamp(end_s + ahead * 3600, timezone.utc),
                               timedelta(minutes=15), closed="left", time_zone="UTC", eager=True)
        imp, exp = tariff.prices_at(ts)
        n_q = hours * 4
        hour_ts = ts.gather(np.arange(0, n_q, 4)).dt.convert_time_zone(tariff.timezone)
        return _Window(tariff, tariff.timezone, tariff.currency, datetime.fromtimestamp(end_s, timezone.utc),
                       start_s, end_s, start_s // 3600, hours, ahead, s.window_days, imp[:n_q], imp, exp,
                       imp[:n_q].reshape(hours, 4).mean(axis=1), hour_ts.dt.hour().to_numpy(),
                       hour_ts.dt.date().cast(pl.Int32).to_numpy())

    def peak_label(self, peak: np.ndarray) -> str:
        if self.tariff.kind == TariffKind.TOU:
            dearest = max(self.tariff.periods, key=lambda p: p.import_price)
            if dearest.import_price > (self.tariff.import_price or 0):
                return f"{dearest.name} {dearest.hours_text()}"
        hours = sorted(set(self.local_hour[peak].tolist()))
        return "most often " + ", ".join(f"{h:02d}:00" for h in hours[:6]) + ("…" if len(hours) > 6 else "")


@dataclass(slots=True)
class _RunShift:
    actual: float
    best: float
    energy_wh: float
    absorbed_wh: float
    best_start_s: int
    into_export: bool


@dataclass(slots=True)
class _ShiftTotals:
    runs: int = 0
    unpriced: int = 0
    actual: float = 0.0
    best: float = 0.0
    energy_wh: float = 0.0
    absorbed_wh: float = 0.0
    starts: Counter = field(default_factory=Counter)
    per_device: Counter = field(default_factory=Counter)

    @property
    def devices(self) -> list[str]:
        return sorted(self.per_device)

    def add(self, r: _RunShift, device_id: str, zone: str) -> None:
        self.runs += 1
        self.actual += r.actual
        self.best += r.best
        self.energy_wh += r.energy_wh
        self.absorbed_wh += r.absorbed_wh
        self.per_device[device_id] += 1
        # Only runs that had somewhere cheaper to go say where to start: a run with nothing cheaper
        # ahead "moves" to its own start, and counting those named e.g. 08:15 after a night rate
        # that ended at 07:30.
        if r.best < r.actual:
            self.starts[datetime.fromtimestamp(r.best_start_s, ZoneInfo(zone)).strftime("%H:%M")] += 1

    def typical_start(self) -> str | None:
        """The most common start of the moved runs (the earliest of equals); None if none moved."""
        if not self.starts:
            return None
        return min(self.starts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _shift_run(run: Run, w: _Window, export_quarter_wh: np.ndarray, span_q: int,
               device_id: str) -> _RunShift | None:
    """The run where it happened vs its cheapest start in the following ``span_q`` quarters."""
    q0 = (run.first_quarter_s - w.start_s) // QUARTER_S
    q1 = min(q0 + span_q, len(w.import_qx))
    if q1 - q0 < len(run.quarter_wh):
        return None
    imp = w.import_qx[q0:q1]
    exp = w.export_qx[q0:q1]
    if np.isnan(imp).any() or np.isnan(exp).any():
        return None
    slot = timedelta(seconds=QUARTER_S)
    start = datetime.fromtimestamp(run.first_quarter_s, timezone.utc)
    export_w = export_quarter_wh[q0:q1] * 4  # Wh per quarter -> mean W
    load = DeferrableLoad.from_profile(device_id, run.quarter_wh, slot, start, start + slot * (q1 - q0))
    plan = optimize(PlanProblem(start, slot, tuple(imp), tuple(-export_w), (load,), tuple(exp)),
                    solver="enumerate")
    [shifted] = plan.loads
    best_q = int((shifted.start - start) / slot)
    profile = np.asarray(run.quarter_wh)
    exported_then = export_quarter_wh[q0 + best_q: q0 + best_q + len(profile)]
    absorbed = float(np.minimum(profile, exported_then).sum())
    return _RunShift(shifted.baseline_cost, shifted.cost, float(profile.sum()), absorbed,
                     _epoch_s(shifted.start), absorbed > 0)


def _label(device_id: str) -> str:
    return device_id.replace("_", " ")


def _add_quarter(run: _OpenRun, minute: int, energy: float) -> None:
    index = minute // 15 - run.start_min // 15
    while len(run.quarters) <= index:
        run.quarters.append(0.0)
    run.quarters[index] += energy


def _epoch_s(ts: datetime) -> int:
    return int(ts.timestamp())  # buckets are aware and whole seconds


def _next_midnight_s(now_s: int, zone: str, inclusive: bool = False) -> int:
    """The first local midnight after ``now_s`` (``inclusive``: the last one at or before it)."""
    tz = ZoneInfo(zone)
    day: date = datetime.fromtimestamp(now_s, tz).date()
    if not inclusive:
        day += timedelta(days=1)
    return _epoch_s(datetime.combine(day, time(0), tz))
