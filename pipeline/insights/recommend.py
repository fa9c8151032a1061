"""Energy-saving recommendations for one home, from its 1-minute windows.

:class:`HomeRecommender` is a pure, picklable state object (Bytewax snapshots it). It consumes the
home's ``DeviceWindow``s and ``HomeWindow``s in event time and keeps compact history: per device
and for the home, hourly values in ``array`` ring buffers of ``history_days`` (62) days, plus the
recent runs of flexible appliances. Once a day, when event time passes local midnight (plus
``settle_minutes``, so the day's last minutes are in, plus 0-``evaluate_spread_min`` minutes fixed
by the home's id, so a worker's homes do not all evaluate at once), it estimates the kinds below over the
last ``window_days`` (30) days and returns ``Recommendation`` records. Every estimate prices
energy with the tariff in effect at that midnight (the saving is what the home would save from
now on), applied at the times the energy was used. A month is 365.25 / 12 days; estimates are
scaled from the days that had data.

* ``standby_waste`` (home): always-on power = the median, over the window's night hours
  (00:00–05:00 local) with at least 45 minutes of data, of each hour's 10th-percentile minute
  power. Saving: cutting it to ``reachable_standby_w`` (50 W), around the clock, at the mean import
  price of the window.
* ``load_shift`` (per flexible appliance): a device of kind EV, or one whose id names a washing
  machine / washer, dishwasher, dryer / tumble dryer, EV / car / charger, boiler, immersion or
  water heater. Its runs are detected (on at >= 20 W, ended by 30 minutes below; 100 Wh to 8 h,
  EV 16 h) and kept as 15-minute energy profiles. Each run of the window is priced where it
  happened and at the cheapest start from then until it would end ``shift_window_h`` (12 h,
  EV 14 h) later, with the optimiser (:mod:`pipeline.energy.optimize`, single-load enumeration, which
  takes the earliest of equally cheap starts). In a home that exports, a quarter-hour in an hour
  that exported E Wh may absorb E/4 Wh of the run at the export price (the income forgone).
* ``solar_self_consumption`` (home, PV homes): the runs whose cheapest start above falls into
  hours of export are reported here instead of under ``load_shift``, so no saving is counted
  twice; its kWh is the grid import they would avoid.
* ``peak_reduction`` (home, time-varying tariffs): peak hours are those priced above the window's
  median and at or above its 90th percentile (a TOU tariff's dearest period). Of the home's energy
  in them, after always-on power and the flexible appliances (counted above), a share
  ``peak_movable_share`` (20 %) is assumed movable to the cheapest hour of the same local day.
* ``usage_increase`` (per device, not meters, PV or batteries): kWh per day over the last window
  vs the window before (days with data only); at least 1.5 times and 0.2 kWh/day more. Saving:
  back to the earlier level, at the mean price of the hours the device used energy in.

A recommendation is emitted only when it is worth it: ``min_money_per_month`` (0.50 in the
tariff's currency) and, for kinds that save energy, ``min_kwh_per_month`` (1 kWh); and only when
every number in its explanation is known (a missing price means no recommendation). Shifting
saves money, not energy: its ``kwh_per_month`` is 0 and the energy moved is in ``detail``.

Limits: a home minute re-emitted more than ``settle_minutes`` after its hour ended, or a device
minute re-emitted at all, is not corrected in the history (the flow re-emits home minutes within
10 minutes, and device minutes once).
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from pipeline.energy.optimize import DeferrableLoad, PlanProblem, optimize
from pipeline.energy.tariff import Tariff, TariffBook, TariffKind
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow, Recommendation
from pipeline.settings import RecommendSettings, home_offset_min

DAYS_PER_MONTH = 365.25 / 12
QUARTER_S = 900
_FLEXIBLE_PARTS = ("wash", "dish", "dryer", "drier", "tumble", "boiler", "immersion", "waterheater",
                   "water_heater", "water-heater", "hotwater", "hot_water", "charger", "wallbox")
_FLEXIBLE_WORDS = {"ev", "car", "dryer"}
_NO_USAGE_CHECK = {DeviceKind.METER, DeviceKind.PV, DeviceKind.BATTERY}


def is_flexible(device_id: str, kind: DeviceKind) -> bool:
    """A load that can run at another time: an EV, or an appliance named like a deferrable one."""
    if kind == DeviceKind.EV:
        return True
    if kind != DeviceKind.APPLIANCE:
        return False
    name = device_id.lower()
    return any(part in name for part in _FLEXIBLE_PARTS) or bool(
        _FLEXIBLE_WORDS & set(re.split(r"[^a-z0-9]+", name)))


# ---------------------------------------------------------------------- compact history

_NUMPY_TYPES = {"f": np.float32, "B": np.uint8}


class HourRings:
    """Values per UTC hour for the last ``hours`` hours, in ``array`` columns sharing one tag
    column that says which hour each slot holds (a slot is cleared when a newer hour takes it)."""

    __slots__ = ("tags", "columns")

    def __init__(self, hours: int, **typecodes: str) -> None:
        self.tags = array("i", [-1]) * hours
        self.columns = {name: array(code, bytes(array(code).itemsize * hours))
                        for name, code in typecodes.items()}

    def _slot(self, hour: int) -> int | None:
        k = hour % len(self.tags)
        tag = self.tags[k]
        if tag == hour:
            return k
        if tag > hour:  # older than the ring reaches
            return None
        self.tags[k] = hour
        for column in self.columns.values():
            column[k] = 0
        return k

    def add(self, hour: int, **values: float) -> None:
        k = self._slot(hour)
        if k is not None:
            for name, value in values.items():
                self.columns[name][k] += value

    def put(self, hour: int, **values: float) -> None:
        k = self._slot(hour)
        if k is not None:
            for name, value in values.items():
                self.columns[name][k] = value

    def window(self, name: str, first_hour: int, hours: int) -> np.ndarray:
        """``hours`` values of one column from ``first_hour``; NaN where the ring holds nothing."""
        wanted = np.arange(first_hour, first_hour + hours)
        k = wanted % len(self.tags)
        tags = np.frombuffer(self.tags, dtype=np.int32)[k]
        column = self.columns[name]
        values = np.frombuffer(column, dtype=_NUMPY_TYPES[column.typecode])[k].astype(float)
        return np.where(tags == wanted, values, np.nan)


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a flexible appliance: energy per quarter-hour from the quarter it started in."""

    start_s: int  # epoch seconds of its first on-minute
    end_s: int  # end of its last on-minute
    quarter_wh: tuple[float, ...]

    @property
    def first_quarter_s(self) -> int:
        return self.start_s // QUARTER_S * QUARTER_S

    @property
    def energy_wh(self) -> float:
        return sum(self.quarter_wh)


@dataclass(slots=True)
class _OpenRun:
    start_min: int
    last_on_min: int
    quarters: list[float]
    pending: list[tuple[int, float]] = field(default_factory=list)  # off-minutes that may be inside


class DeviceHistory:
    __slots__ = ("kind", "flexible", "hourly", "open_run", "runs", "newest_min")

    def __init__(self, kind: DeviceKind, flexible: bool, hours: int) -> None:
        self.kind = kind
        self.flexible = flexible
        self.hourly = HourRings(hours, energy="f", minutes="B")  # Wh; minutes with a window
        self.open_run: _OpenRun | None = None
        self.runs: list[Run] = []
        self.newest_min = -1


class HomeHistory:
    __slots__ = ("hourly", "pending", "newest_min", "settled_min")

    def __init__(self, hours: int) -> None:
        # imported: Wh of the minutes with positive energy; exported: Wh (positive) of the minutes
        # with negative energy; low: the hour's low percentile of minute power (W).
        self.hourly = HourRings(hours, imported="f", exported="f", low="f", minutes="B")
        self.pending: dict[int, tuple[float, float]] = {}  # minute -> (energy Wh, power W)
        self.newest_min = -1
        self.settled_min = -1  # minutes before this are in the rings; later copies are dropped


# ---------------------------------------------------------------------- the state object

class HomeRecommender:
    """Per-home history and the daily recommendations. Picklable; no I/O.

    The tariff book is passed to each call (it is configuration, not state, and is not pickled).
    """

    def __init__(self, home_id: str, settings: RecommendSettings | None = None) -> None:
        self.home_id = home_id
        self.settings = settings or RecommendSettings()
        if self.settings.history_days < 2 * self.settings.window_days:
            raise ValueError("history_days must cover two windows (the usage comparison needs both)")
        self.hours = self.settings.history_days * 24
        self.devices: dict[str, DeviceHistory] = {}
        self.home = HomeHistory(self.hours)
        self.next_eval_s: int | None = None

    # ------------------------------------------------------------------ input
    def add_device_window(self, window: DeviceWindow, book: TariffBook) -> list[Recommendation]:
        dev = self.devices.get(window.device_id)
        if dev is None:
            dev = DeviceHistory(window.kind, is_flexible(window.device_id, window.kind), self.hours)
            self.devices[window.device_id] = dev
        minute = _epoch_s(window.bucket) // 60
        if minute <= dev.newest_min:
            return []  # a device minute is emitted once; a repeat would be counted twice
        dev.newest_min = minute
        dev.hourly.add(minute // 60, energy=window.energy_wh, minutes=1)
        if dev.flexible:
            self._track_run(dev, minute, window.mean_power_w, window.energy_wh)
        return self._maybe_evaluate(minute * 60, book)

    def add_home_window(self, window: HomeWindow, book: TariffBook) -> list[Recommendation]:
        home = self.home
        minute = _epoch_s(window.bucket) // 60
        if minute < home.settled_min:
            return []  # its hour is already in the history
        # A re-emitted minute (a late device minute corrected the total) replaces the earlier one.
        home.pending[minute] = (window.energy_wh, window.mean_power_w)
        if minute > home.newest_min:
            home.newest_min = minute
            self._settle_hours(minute - self.settings.settle_minutes)
        return self._maybe_evaluate(minute * 60, book)

    # ------------------------------------------------------------------ history upkeep
    def _settle_hours(self, until_minute: int) -> None:
        """Move pending minutes of hours ending at or before ``until_minute`` into the rings."""
        home = self.home
        boundary = until_minute // 60 * 60
        if boundary <= home.settled_min:
            return
        home.settled_min = boundary
        done = {m // 60 for m in home.pending if m < boundary}
        for hour in sorted(done):
            minutes = [home.pending.pop(m) for m in range(hour * 60, hour * 60 + 60) if m in home.pending]
            energy = np.array([e for e, _ in minutes])
            home.hourly.put(hour, imported=float(energy[energy > 0].sum()),
                            exported=float(-energy[energy < 0].sum()), minutes=len(minutes),
                            low=float(np.percentile([p for _, p in minutes], self.settings.standby_percentile)))

    def _track_run(self, dev: DeviceHistory, minute: int, power: float, energy: float) -> None:
        s = self.settings
        run = dev.open_run
        if run is not None and minute - run.last_on_min > s.run_gap_min:
            self._close_run(dev)
            run = None
        if power >= s.run_on_w:
            if run is None:
                run = dev.open_run = _OpenRun(minute, minute, [])
            for m, e in run.pending:
                _add_quarter(run, m, e)
            run.pending.clear()
            _add_quarter(run, minute, energy)
            run.last_on_min = minute
        elif run is not None:
            run.pending.append((minute, energy))

    def _close_run(self, dev: DeviceHistory) -> None:
        run = dev.open_run
        dev.open_run = None
        if run is None:
            return
        s = self.settings
        minutes = run.last_on_min + 1 - run.start_min
        longest = (s.ev_run_max_h if dev.kind == DeviceKind.EV else s.run_max_h) * 60
        if sum(run.quarters) >= s.run_min_wh and minutes <= longest:
            dev.runs.append(Run(run.start_min * 60, (run.last_on_min + 1) * 60, tuple(run.quarters)))
        oldest = (run.last_on_min - s.history_days * 1440) * 60
        dev.runs = [r for r in dev.runs if r.start_s >= oldest]

    # ------------------------------------------------------------------ daily evaluation
    def _maybe_evaluate(self, now_s: int, book: TariffBook) -> list[Recommendation]:
        delay = home_offset_min(self.home_id, self.settings.evaluate_spread_min)
        settle = (self.settings.settle_minutes + delay) * 60
        if self.next_eval_s is None:
            self.next_eval_s = _next_midnight_s(now_s, book.timezone(self.home_id)) + settle
            return []
        if now_s < self.next_eval_s:
            return []
        zone = book.timezone(self.home_id)
        midnight_s = _next_midnight_s(now_s - settle, zone, inclusive=True)
        self.next_eval_s = _next_midnight_s(midnight_s + 1, zone) + settle
        return self.evaluate(datetime.fromtimestamp(midnight_s, timezone.utc), book)

    def evaluate(self, day_end: datetime, book: TariffBook) -> list[Recommendation]:
        """The recommendations for the window ending at ``day_end`` (a local midnight, UTC).

        Runs the flexible appliances have not finished by then are left out.
        """
        end_s = _epoch_s(day_end)
        self._settle_hours(end_s // 60)
        for dev in self.devices.values():
            if dev.open_run is not None and (end_s // 60) - dev.open_run.last_on_min > self.settings.run_gap_min:
                self._close_run(dev)
        try:
            tariff = book.tariff_at(self.home_id, day_end)
        except ValueError:
            return []  # no tariff yet: nothing can be priced
        window = _Window.build(self, tariff, end_s)
        out: list[Recommendation] = []
        for make in (self._standby, self._peak, self._usage_increase):
            out.extend(make(window))
        out.extend(self._shifts(window))
        return out

    # ------------------------------------------------------------------ the kinds
    def _standby(self, w: _Window) -> list[Recommendation]:
        s = self.settings
        base_w, night_hours = self._always_on(w)
        if night_hours < s.min_days * (s.night_end_h - s.night_start_h):
            return []
        cut_w = base_w - s.reachable_standby_w
        price = float(np.mean(w.import_q))
        if cut_w <= 0 or not math.isfinite(price):
            return []
        kwh = cut_w * 24 * DAYS_PER_MONTH / 1000
        money = kwh * price
        year_kwh = base_w * 24 * 365.25 / 1000
        detail = (
            f"At night ({s.night_start_h:02d}:00–{s.night_end_h:02d}:00) your home still drew about "
            f"{base_w:.0f} W at its quietest: the median, over {night_hours} night hours of the last "
            f"{w.days} days, of each hour's {s.standby_percentile:g}th-percentile minute power. Around the "
            f"clock that is {year_kwh:.0f} kWh ({year_kwh * price:.2f} {w.cur}) a year at the average "
            f"price {price:.3f} {w.cur}/kWh of the last {w.days} days. Cutting it to {s.reachable_standby_w:.0f} W "
            f"(a fridge-freezer's average plus a router) saves {cut_w:.0f} W x 24 h x "
            f"{DAYS_PER_MONTH:.1f} days = {kwh:.1f} kWh, {money:.2f} {w.cur} a month. Look for what stays "
            "on: TVs and consoles on standby, chargers, an old second fridge or freezer.")
        return self._emit(w, "", "standby_waste", f"Cut always-on power: {base_w:.0f} W day and night",
                          detail, kwh, money, True, (base_w, price))

    def _usage_increase(self, w: _Window) -> list[Recommendation]:
        s = self.settings
        out = []
        for device_id, dev in sorted(self.devices.items()):
            if dev.kind in _NO_USAGE_CHECK:
                continue
            recent = dev.hourly.window("energy", w.first_hour, w.hours)
            before = dev.hourly.window("energy", w.first_hour - w.hours, w.hours)
            n_recent = np.nansum(dev.hourly.window("minutes", w.first_hour, w.hours)) / 1440
            n_before = np.nansum(dev.hourly.window("minutes", w.first_hour - w.hours, w.hours)) / 1440
            if n_recent < s.min_days or n_before < s.min_days:
                continue
            per_day_recent = np.nansum(recent) / 1000 / n_recent
            per_day_before = np.nansum(before) / 1000 / n_before
            extra = per_day_recent - per_day_before
            if per_day_before <= 0 or per_day_recent < s.increase_ratio * per_day_before or \
                    extra < s.increase_min_kwh_per_day:
                continue
            used = np.nan_to_num(recent)
            price = float((used * w.import_h).sum() / used.sum()) if used.sum() > 0 else math.nan
            kwh = extra * DAYS_PER_MONTH
            money = kwh * price
            ratio = per_day_recent / per_day_before
            detail = (
                f"The {_label(device_id)} used {per_day_recent:.2f} kWh a day in the last {w.days} days "
                f"({n_recent:.1f} days with data) against {per_day_before:.2f} kWh a day in the {w.days} "
                f"days before ({n_before:.1f} days with data): {ratio:.1f} times as much. Back at the "
                f"earlier level it would use {extra:.2f} kWh a day, {kwh:.1f} kWh a month less, "
                f"{money:.2f} {w.cur} at {price:.3f} {w.cur}/kWh (the average price of the hours it used "
                "energy in). Check it for a fault, a changed setting or a new habit.")
            out += self._emit(w, device_id, "usage_increase",
                              f"The {_label(device_id)} used {ratio:.1f}x as much as the month before", detail,
                              kwh, money, True, (price, per_day_recent, per_day_before))
        return out

    def _peak(self, w: _Window) -> list[Recommendation]:
        s = self.settings
        prices = w.import_h
        if np.isnan(prices).any():
            return []
        threshold = np.quantile(prices, s.peak_price_quantile)
        peak = (prices > np.median(prices)) & (prices >= threshold - 1e-12)
        imported = self.home.hourly.window("imported", w.first_hour, w.hours)
        minutes = self.home.hourly.window("minutes", w.first_hour, w.hours)
        days_with_data = np.nansum(minutes) / 1440
        if not peak.any() or days_with_data < s.min_days:
            return []
        standby, _ = self._always_on(w)
        flexible = np.zeros(w.hours)
        for dev in self.devices.values():
            if dev.flexible:
                flexible += np.nan_to_num(dev.hourly.window("energy", w.first_hour, w.hours))
        present = peak & ~np.isnan(imported)
        peak_wh = np.nan_to_num(imported)[present]
        always_wh = (standby * np.nan_to_num(minutes) / 60)[present]
        flex_wh = flexible[present]
        rest_wh = np.maximum(0.0, peak_wh - always_wh - flex_wh)
        # The cheapest hour of each local day is where moved energy would go.
        cheapest = np.array([prices[w.local_day == d].min() for d in w.local_day])[present]
        moved_wh = rest_wh * s.peak_movable_share
        saving = float((moved_wh * (prices[present] - cheapest)).sum() / 1000)
        money = saving * DAYS_PER_MONTH / days_with_data
        moved_kwh_month = moved_wh.sum() / 1000 * DAYS_PER_MONTH / days_with_data
        label = w.peak_label(peak)
        detail = (
            f"In the last {w.days} days ({days_with_data:.1f} days with data) your home used "
            f"{peak_wh.sum() / 1000:.1f} kWh in {int(present.sum())} peak hours ({label}, "
            f"{prices[present].min():.3f} {w.cur}/kWh or more). Of that, {always_wh.sum() / 1000:.1f} kWh was always-on power "
            f"({standby:.0f} W) and {flex_wh.sum() / 1000:.1f} kWh the flexible appliances (see their own "
            f"suggestions); the other {rest_wh.sum() / 1000:.1f} kWh is cooking, lighting, laundry and the "
            f"like. If {s.peak_movable_share:.0%} of it moved to the cheapest hour of the same day "
            f"({moved_kwh_month:.1f} kWh a month), it would cost {saving:.2f} {w.cur} less over those days, "
            f"{money:.2f} {w.cur} a month.")
        return self._emit(w, "", "peak_reduction", f"Use less in the peak hours ({label})", detail,
                          0.0, money, False, (threshold, standby, saving))

    def _always_on(self, w: _Window) -> tuple[float, int]:
        """Always-on power (W) and the number of night hours it was taken from."""
        s = self.settings
        lows = self.home.hourly.window("low", w.first_hour, w.hours)
        minutes = self.home.hourly.window("minutes", w.first_hour, w.hours)
        night = (w.local_hour >= s.night_start_h) & (w.local_hour < s.night_end_h)
        usable = night & (minutes >= s.night_hour_min_minutes) & ~np.isnan(lows)
        return (float(np.median(lows[usable])) if usable.any() else 0.0), int(usable.sum())

    def _shifts(self, w: _Window) -> list[Recommendation]:
        """load_shift per flexible device and solar_self_consumption for the home, from the runs."""
        s = self.settings
        out: list[Recommendation] = []
        exported = np.nan_to_num(self.home.hourly.window("exported", w.first_hour, w.hours + w.ahead_hours))
        export_quarter_wh = np.repeat(exported / 4, 4)
        solar = _ShiftTotals()
        home_days = np.nansum(self.home.hourly.window("minutes", w.first_hour, w.hours)) / 1440
        for device_id, dev in sorted(self.devices.items()):
            if not dev.flexible:
                continue
            days = np.nansum(dev.hourly.window("minutes", w.first_hour, w.hours)) / 1440
            if days < s.min_days:
                continue
            span_q = int((s.ev_shift_window_h if dev.kind == DeviceKind.EV else s.shift_window_h) * 4)
            grid = _ShiftTotals()
            for run in dev.runs:
                if not w.start_s <= run.start_s < w.end_s:
                    continue
                result = _shift_run(run, w, export_quarter_wh, span_q, device_id)
                if result is None:
                    grid.unpriced += 1
                    continue
                (solar if result.into_export else grid).add(result, device_id, w.zone)
            if grid.runs:
                out += self._emit_shift(w, device_id, grid, days, span_q / 4, solar.per_device[device_id])
        if solar.runs:
            out += self._emit_solar(w, solar, home_days, exported[: w.hours].sum() / 1000)
        return out

    def _emit_shift(self, w: _Window, device_id: str, t: _ShiftTotals, days: float,
                    span_h: float, into_solar: int) -> list[Recommendation]:
        saving = t.actual - t.best
        money = saving * DAYS_PER_MONTH / days
        when = t.typical_start()
        skipped = f" ({t.unpriced} runs without prices left out)" if t.unpriced else ""
        solar_note = (f" {into_solar} more runs, better moved into the hours your panels export, are "
                      "counted in the solar suggestion." if into_solar else "")
        detail = (
            f"{t.runs} runs of the {_label(device_id)} in the last {w.days} days ({days:.1f} days with data)"
            f"{skipped} used {t.energy_wh / 1000:.1f} kWh and cost {t.actual:.2f} {w.cur} at the times they "
            f"ran ({w.tariff.describe()}). Started at the cheapest time within {span_h:g} h of when each "
            f"began (most often {when}), priced quarter-hour by quarter-hour with its measured profile, "
            f"they would have cost {t.best:.2f} {w.cur}: {saving:.2f} {w.cur} less, {money:.2f} {w.cur} a "
            f"month. The same energy ({t.energy_wh / 1000 * DAYS_PER_MONTH / days:.1f} kWh a month) is "
            f"used, only later.{solar_note}")
        return self._emit(w, device_id, "load_shift", f"Run the {_label(device_id)} at about {when}", detail,
                          0.0, money, False, (t.actual, t.best))

    def _emit_solar(self, w: _Window, t: _ShiftTotals, days: float,
                    exported_kwh: float) -> list[Recommendation]:
        if days < self.settings.min_days:
            return []
        saving = t.actual - t.best
        money = saving * DAYS_PER_MONTH / days
        kwh = t.absorbed_wh / 1000 * DAYS_PER_MONTH / days
        devices = " and ".join(sorted(_label(d) for d in t.devices))
        export_price = float(np.mean(w.export_qx[: w.hours * 4]))
        detail = (
            f"Your home exported {exported_kwh:.1f} kWh in the last {w.days} days ({days:.1f} days with "
            f"data), paid {export_price:.3f} {w.cur}/kWh on average. {t.runs} "
            f"runs of the {devices} ({t.energy_wh / 1000:.1f} kWh) could have started later (within "
            f"{self.settings.shift_window_h:g} h) while the panels exported (most often at {t.typical_start()}): "
            f"{t.absorbed_wh / 1000:.1f} kWh would have come from the panels instead of the grid. They "
            f"cost {t.actual:.2f} {w.cur} as they ran and would have cost {t.best:.2f} {w.cur} (exported "
            f"energy used at home is worth the import price minus the export price): {money:.2f} {w.cur} and "
            f"{kwh:.1f} kWh of grid import a month.")
        return self._emit(w, "", "solar_self_consumption",
                          f"Run the {devices} while your panels export", detail, kwh, money,
                          True, (t.actual, t.best, export_price))

    def _emit(self, w: _Window, device_id: str, kind: str, title: str, detail: str, kwh: float,
              money: float, saves_energy: bool, explained_by: tuple[float, ...]) -> list[Recommendation]:
        s = self.settings
        if not all(math.isfinite(v) for v in (kwh, money, *explained_by)):
            return []  # a number of the explanation is missing: it could not be explained
        if money < s.min_money_per_month or (saves_energy and kwh < s.min_kwh_per_month):
            return []
        return [Recommendation(self.home_id, device_id, kind, w.day_end, title, detail,
                               round(kwh, 3), round(money, 2), w.cur)]


# ---------------------------------------------------------------------- evaluation helpers

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
        self.starts[datetime.fromtimestamp(r.best_start_s, ZoneInfo(zone)).strftime("%H:%M")] += 1

    def typical_start(self) -> str:
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
