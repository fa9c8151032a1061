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
from datetime import datetime, timezone

import numpy as np

from pipeline.energy.tariff import TariffBook
from pipeline.insights.recommend.history import DeviceHistory, HomeHistory, Run, _OpenRun, is_flexible
from pipeline.insights.recommend.peak import peak
from pipeline.insights.recommend.shift import shifts
from pipeline.insights.recommend.standby import standby
from pipeline.insights.recommend.usage import usage_increase
from pipeline.insights.recommend.window import _add_quarter, _epoch_s, _next_midnight_s, _Window
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow, Recommendation
from pipeline.settings import RecommendSettings, home_offset_min

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
        if dev.hourly is not None:
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
        for make in (standby, peak, usage_increase):
            out.extend(make(self, window))
        out.extend(shifts(self, window))
        return out

    # ------------------------------------------------------------------ shared by the kinds
    def always_on(self, w: _Window) -> tuple[float, int]:
        """Always-on power (W) and the number of night hours it was taken from."""
        s = self.settings
        lows = self.home.hourly.window("low", w.first_hour, w.hours)
        minutes = self.home.hourly.window("minutes", w.first_hour, w.hours)
        night = (w.local_hour >= s.night_start_h) & (w.local_hour < s.night_end_h)
        usable = night & (minutes >= s.night_hour_min_minutes) & ~np.isnan(lows)
        return (float(np.median(lows[usable])) if usable.any() else 0.0), int(usable.sum())

    def emit(self, w: _Window, device_id: str, kind: str, title: str, detail: str, kwh: float,
              money: float, saves_energy: bool, explained_by: tuple[float, ...]) -> list[Recommendation]:
        s = self.settings
        if not all(math.isfinite(v) for v in (kwh, money, *explained_by)):
            return []  # a number of the explanation is missing: it could not be explained
        if money < s.min_money_per_month or (saves_energy and kwh < s.min_kwh_per_month):
            return []
        return [Recommendation(self.home_id, device_id, kind, w.day_end, title, detail,
                               round(kwh, 3), round(money, 2), w.cur)]
