"""When to run deferrable loads: the cheapest start times under prices, a base load and a limit.

The horizon is a grid of equal slots (15 or 60 minutes). Per slot we know the import and export
price (currency per kWh) and the forecast base load (mean W; negative when PV exports). Each
deferrable load runs at ``power_w`` for ``duration`` somewhere between ``earliest`` and
``deadline``:

* a non-interruptible load starts at a slot start and runs without a break; its last slot may be
  partly used (a 1.5 h load on hourly slots uses all of its first hour and half of its second);
* an interruptible load (an EV) runs in any ``ceil(duration / slot)`` whole slots inside its
  window, spreading its energy evenly over them.

Cost of a slot = grid import x import price - grid export x export price, where the net energy is
base load plus loads. A load that soaks up exported PV therefore costs the export income forgone.
The household limit: in every slot where a load runs, base load + the loads' power <= limit (the
load's full power counts even in a partly used slot). Where the base load alone is over the limit
no load may run.

The optimum is found exactly with a mixed-integer linear programme (scipy.optimize.milp, i.e.
HiGHS): one binary per (load, start) or (interruptible load, slot), grid import and export per
slot as continuous variables (a binary per slot keeps them exclusive where export pays more
than import, so the solver cannot "export" energy it imports). ``solver="enumerate"`` checks
every combination instead: exact too, and faster for a single load (the recommender's case).

A home may also bring a battery, PV and an EV (the day-ahead plan, re-planned as forecasts and
prices change):

* PV (``pv_w``, a forecast per slot) is subtracted from the base load; what is left over exports.
* A battery charges ``charge`` and discharges ``discharge`` kWh per slot (each at most its power
  x the slot), its state of charge moves by ``charge x sqrt(eta) - discharge / sqrt(eta)`` (the
  round-trip efficiency ``eta`` split evenly) and stays within its limits; a binary per slot
  forbids charging and discharging at once (with a negative price, burning energy through the
  battery's losses would otherwise pay). It ends the horizon at least as full as it started
  (``end_soc``), so the plan does not sell energy it did not buy.
* An EV needs ``energy_kwh`` between ``earliest`` and ``deadline`` at up to ``max_power_w``
  (and, when the charger cannot go lower, at least ``min_power_w`` whenever it charges).
* With a limit, what the battery and the EV add never takes grid import over it.

Without the plan ("baseline") the loads start at their earliest, the battery stays idle and the EV
charges at full power from its earliest start.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from pipeline.records import Forecast

_ENUMERATION_LIMIT = 1_000_000


class PlanError(ValueError):
    """The problem has no solution, or its input is wrong; the message says which and why."""


@dataclass(frozen=True, slots=True)
class DeferrableLoad:
    """A load to schedule. ``profile_wh`` (energy per slot of the problem, measured) replaces
    ``power_w x duration`` when given; its power for the limit is then the slot's mean power."""

    name: str
    power_w: float
    duration: timedelta
    earliest: datetime
    deadline: datetime
    interruptible: bool = False
    profile_wh: tuple[float, ...] = ()

    @staticmethod
    def from_energy(name: str, energy_kwh: float, duration: timedelta, earliest: datetime,
                    deadline: datetime, interruptible: bool = False) -> DeferrableLoad:
        hours = duration / timedelta(hours=1)
        if not hours > 0:
            raise PlanError(f"load {name!r}: duration must be positive")
        return DeferrableLoad(name, energy_kwh * 1000.0 / hours, duration, earliest, deadline, interruptible)

    @staticmethod
    def from_profile(name: str, profile_wh: Sequence[float], slot: timedelta, earliest: datetime,
                     deadline: datetime) -> DeferrableLoad:
        slot_h = slot / timedelta(hours=1)
        peak = max(profile_wh) / slot_h if profile_wh else 0.0
        return DeferrableLoad(name, peak, slot * len(profile_wh), earliest, deadline, False,
                              tuple(float(e) for e in profile_wh))

    @property
    def energy_kwh(self) -> float:
        if self.profile_wh:
            return sum(self.profile_wh) / 1000.0
        return self.power_w * (self.duration / timedelta(hours=1)) / 1000.0


@dataclass(frozen=True, slots=True)
class Battery:
    """A home battery. ``soc_kwh`` is its state of charge at the plan's start."""

    capacity_kwh: float
    charge_w: float
    discharge_w: float
    efficiency: float  # round trip, 0 < eta <= 1
    soc_kwh: float
    min_soc_kwh: float = 0.0
    max_soc_kwh: float | None = None  # None: the capacity
    end_soc_kwh: float | None = None  # None: at least where it started

    @property
    def upper_kwh(self) -> float:
        return self.capacity_kwh if self.max_soc_kwh is None else self.max_soc_kwh

    @property
    def target_end_kwh(self) -> float:
        return self.soc_kwh if self.end_soc_kwh is None else self.end_soc_kwh


@dataclass(frozen=True, slots=True)
class EvCharge:
    """Energy an EV needs by a deadline; the charger modulates between its power limits."""

    energy_kwh: float
    max_power_w: float
    earliest: datetime
    deadline: datetime
    min_power_w: float = 0.0


@dataclass(frozen=True, slots=True)
class PlanSlot:
    """One slot of a plan; powers are slot means in W, ``grid_w`` negative when exporting."""

    start: datetime
    import_price: float
    export_price: float
    base_w: float
    pv_w: float
    loads_w: float
    battery_w: float  # + charging, - discharging
    soc_kwh: float | None  # at the slot's end
    ev_w: float
    grid_w: float


@dataclass(frozen=True, slots=True)
class PlanProblem:
    start: datetime  # start of the first slot (aware)
    slot: timedelta
    import_price: tuple[float, ...]  # per kWh, one per slot
    base_load_w: tuple[float, ...]  # mean W per slot; negative = export
    loads: tuple[DeferrableLoad, ...]
    export_price: tuple[float, ...] | None = None  # None: export earns nothing
    power_limit_w: float | None = None
    currency: str = ""
    display_tz: str = "UTC"  # for times in error messages
    pv_w: tuple[float, ...] | None = None  # forecast PV output per slot (W, >= 0)
    battery: Battery | None = None
    ev: EvCharge | None = None

    @property
    def slots(self) -> int:
        return len(self.import_price)

    @property
    def net_base_w(self) -> np.ndarray:
        """Base load less PV per slot (W; negative: the home exports before any plan)."""
        base = np.asarray(self.base_load_w, dtype=float)
        return base if self.pv_w is None else base - np.asarray(self.pv_w, dtype=float)

    def slot_start(self, i: int) -> datetime:
        return self.start + self.slot * i


@dataclass(frozen=True, slots=True)
class ScheduledLoad:
    name: str
    start: datetime
    end: datetime  # when it finishes
    slots: tuple[datetime, ...]  # start of every slot it runs in
    energy_kwh: float
    cost: float  # what it adds to the plan's cost (the plan without it costs this much less)
    earliest_start: datetime  # where the baseline puts it
    baseline_cost: float  # what it adds at its earliest start


@dataclass(frozen=True, slots=True)
class Plan:
    loads: tuple[ScheduledLoad, ...]
    cost: float  # the horizon's grid cost (base load + loads) with this schedule
    baseline_cost: float  # the same with every load at its earliest start
    saving: float  # baseline_cost - cost
    peak_w: float  # highest slot power (base + loads) of the schedule
    baseline_peak_w: float
    baseline_within_limit: bool  # starting everything at once may break the limit
    power_limit_w: float | None
    currency: str
    solver: str
    schedule: tuple[PlanSlot, ...] = ()
    baseline_schedule: tuple[PlanSlot, ...] = ()


@dataclass(frozen=True, slots=True)
class _Flex:
    """Battery and EV energy per slot (kWh) chosen by the solver, or set by the baseline."""

    charge: np.ndarray
    discharge: np.ndarray
    soc: np.ndarray | None  # at each slot's end; None without a battery
    ev: np.ndarray

    @staticmethod
    def idle(n: int) -> _Flex:
        return _Flex(np.zeros(n), np.zeros(n), None, np.zeros(n))

    @property
    def net_kwh(self) -> np.ndarray:
        return self.charge - self.discharge + self.ev


@dataclass(frozen=True, slots=True)
class _Option:
    """One way to place a load: the slots it occupies, its energy (Wh) and power (W) in them."""

    slots: np.ndarray
    energy_wh: np.ndarray
    power_w: np.ndarray


@dataclass(frozen=True, slots=True)
class _Layout:
    load: DeferrableLoad
    options: tuple[_Option, ...]
    count: int  # how many options are chosen: 1, or the slots of an interruptible load


def optimize(problem: PlanProblem, solver: Literal["milp", "enumerate"] = "milp",
             time_limit_s: float = 30.0) -> Plan:
    """The cheapest schedule; raises :class:`PlanError` when the input is wrong or infeasible."""
    _validate(problem)
    layouts = [_layout(problem, load) for load in problem.loads]
    _check_each_fits(problem, layouts)
    if solver == "milp":
        choice, flex = _solve_milp(problem, layouts, time_limit_s)
        name = "milp (HiGHS)"
    elif solver == "enumerate":
        if problem.battery is not None or problem.ev is not None:
            raise PlanError("a battery or an EV needs the milp solver")
        choice, flex = _solve_enumerate(problem, layouts), _Flex.idle(problem.slots)
        name = "enumeration"
    else:
        raise PlanError(f"unknown solver {solver!r}: use milp or enumerate")
    baseline = [tuple(range(layout.count)) for layout in layouts]
    return _plan(problem, layouts, choice, baseline, name, flex, _baseline_flex(problem))


def schedule_cost(problem: PlanProblem, net_wh: np.ndarray) -> float:
    """Grid cost of net energy per slot (Wh, negative = export)."""
    imp = np.asarray(problem.import_price)
    exp = np.zeros(problem.slots) if problem.export_price is None else np.asarray(problem.export_price)
    return float(np.sum(np.where(net_wh > 0, net_wh * imp, net_wh * exp)) / 1000.0)


def base_load_from_forecasts(rows: Sequence[Forecast], start: datetime, slot: timedelta,
                             slots: int) -> tuple[float, ...]:
    """Mean forecast power per plan slot from the newest forecast issue in ``rows``.

    ``rows`` are one home's forecasts (any issues, any resolution): the newest ``made_at`` wins;
    each plan slot gets the time-weighted mean ``yhat_w`` of the forecast slots overlapping it.
    """
    if not rows:
        raise PlanError("no forecast rows for this home: give --base-load-w instead")
    homes = {r.home_id for r in rows}
    if len(homes) > 1:
        raise PlanError(f"forecast rows of several homes {sorted(homes)}: give one home's rows")
    newest = max(r.made_at for r in rows)
    issue = [r for r in rows if r.made_at == newest]
    # A forecast made at one time may come at two resolutions: the finer one is used.
    resolution = min(r.resolution_min for r in issue)
    issue = sorted((r for r in issue if r.resolution_min == resolution), key=lambda r: r.target_ts)
    f_start = np.array([_seconds(r.target_ts) for r in issue])
    f_end = f_start + resolution * 60
    f_value = np.array([r.yhat_w for r in issue])
    out = []
    for i in range(slots):
        s0 = _seconds(start + slot * i)
        s1 = s0 + slot.total_seconds()
        overlap = np.clip(np.minimum(f_end, s1) - np.maximum(f_start, s0), 0, None)
        if overlap.sum() < slot.total_seconds() - 1e-6:
            first, last = issue[0].target_ts, issue[-1].target_ts + timedelta(minutes=resolution)
            raise PlanError(f"the newest forecast (made {newest.isoformat()}) covers {first.isoformat()} "
                            f"to {last.isoformat()}, not the slot at {(start + slot * i).isoformat()}: "
                            "plan within it or give --base-load-w")
        out.append(float((overlap * f_value).sum() / overlap.sum()))
    return tuple(out)


# ---------------------------------------------------------------------- building the problem

def _validate(p: PlanProblem) -> None:
    n = p.slots
    if n == 0:
        raise PlanError("the planning horizon has no slots")
    if p.slot <= timedelta(0):
        raise PlanError("the slot length must be positive")
    if p.start.tzinfo is None:
        raise PlanError("the plan's start must be timezone-aware")
    for name, values in (("import prices", p.import_price), ("base load", p.base_load_w),
                         ("export prices", p.export_price or ())):
        if values and len(values) != n:
            raise PlanError(f"{name}: {len(values)} values for {n} slots")
        if not all(math.isfinite(v) for v in values):
            raise PlanError(f"{name} must be finite numbers (a price or forecast is missing?)")
    if p.power_limit_w is not None and not p.power_limit_w > 0:
        raise PlanError(f"the power limit must be positive, not {p.power_limit_w} W")
    if p.pv_w is not None:
        if len(p.pv_w) != n:
            raise PlanError(f"PV forecast: {len(p.pv_w)} values for {n} slots")
        if not all(math.isfinite(v) and v >= 0 for v in p.pv_w):
            raise PlanError("PV forecast must be finite, non-negative W")
    if not p.loads and p.battery is None and p.ev is None:
        raise PlanError("nothing to plan: give a load, a battery or an EV")
    if p.battery is not None:
        _validate_battery(p.battery)
    if p.ev is not None:
        _validate_ev(p, p.ev)
    names = [load.name for load in p.loads]
    if len(set(names)) != len(names):
        raise PlanError(f"load names must be unique: {names}")
    for load in p.loads:
        if load.earliest.tzinfo is None or load.deadline.tzinfo is None:
            raise PlanError(f"load {load.name!r}: earliest and deadline must be timezone-aware")
        if not (load.power_w > 0 and math.isfinite(load.power_w)):
            raise PlanError(f"load {load.name!r}: power must be a positive number of W")
        if load.duration <= timedelta(0):
            raise PlanError(f"load {load.name!r}: duration must be positive")
        if load.deadline <= load.earliest:
            raise PlanError(f"load {load.name!r}: deadline {_at(p, load.deadline)} is not after its "
                            f"earliest start {_at(p, load.earliest)}")
        if load.profile_wh and (load.interruptible or any(e < 0 or not math.isfinite(e) for e in load.profile_wh)):
            raise PlanError(f"load {load.name!r}: a profile is non-negative Wh per slot, not interruptible")


def _validate_battery(b: Battery) -> None:
    numbers = (b.capacity_kwh, b.charge_w, b.discharge_w, b.efficiency, b.soc_kwh, b.min_soc_kwh,
               b.upper_kwh, b.target_end_kwh)
    if not all(math.isfinite(v) for v in numbers):
        raise PlanError("battery: every parameter must be a finite number")
    if not b.capacity_kwh > 0:
        raise PlanError(f"battery: capacity must be positive, not {b.capacity_kwh:g} kWh")
    if not (b.charge_w > 0 and b.discharge_w > 0):
        raise PlanError("battery: charge and discharge power must be positive")
    if not 0 < b.efficiency <= 1:
        raise PlanError(f"battery: round-trip efficiency must be in (0, 1], not {b.efficiency:g}")
    if not 0 <= b.min_soc_kwh <= b.upper_kwh <= b.capacity_kwh:
        raise PlanError(f"battery: need 0 <= min state of charge ({b.min_soc_kwh:g} kWh) <= max "
                        f"({b.upper_kwh:g} kWh) <= capacity ({b.capacity_kwh:g} kWh)")
    if not b.min_soc_kwh - 1e-9 <= b.soc_kwh <= b.upper_kwh + 1e-9:
        raise PlanError(f"battery: its state of charge {b.soc_kwh:g} kWh is outside its limits "
                        f"{b.min_soc_kwh:g}..{b.upper_kwh:g} kWh")
    if not b.min_soc_kwh - 1e-9 <= b.target_end_kwh <= b.upper_kwh + 1e-9:
        raise PlanError(f"battery: the end state of charge {b.target_end_kwh:g} kWh is outside its limits")


def _ev_slots(p: PlanProblem, ev: EvCharge) -> np.ndarray:
    """Slots that lie wholly between the EV's earliest start and its deadline."""
    slot_s = p.slot.total_seconds()
    first = max(0, math.ceil((ev.earliest - p.start).total_seconds() / slot_s - 1e-9))
    last = min(p.slots, math.floor((ev.deadline - p.start).total_seconds() / slot_s + 1e-9))
    return np.arange(first, max(first, last))


def _validate_ev(p: PlanProblem, ev: EvCharge) -> None:
    if ev.earliest.tzinfo is None or ev.deadline.tzinfo is None:
        raise PlanError("EV: earliest and deadline must be timezone-aware")
    if not (math.isfinite(ev.energy_kwh) and ev.energy_kwh > 0):
        raise PlanError("EV: the energy needed must be a positive number of kWh")
    if not (math.isfinite(ev.max_power_w) and ev.max_power_w > 0):
        raise PlanError("EV: the charge power must be a positive number of W")
    if not (math.isfinite(ev.min_power_w) and 0 <= ev.min_power_w <= ev.max_power_w):
        raise PlanError("EV: the minimum charge power must be between 0 and the maximum")
    slot_h = p.slot.total_seconds() / 3600.0
    most = len(_ev_slots(p, ev)) * ev.max_power_w * slot_h / 1000.0
    if most < ev.energy_kwh - 1e-9:
        raise PlanError(f"EV: {ev.energy_kwh:g} kWh does not fit between {_at(p, ev.earliest)} and "
                        f"{_at(p, ev.deadline)} at {ev.max_power_w:,.0f} W inside the horizon (at "
                        f"most {most:.2f} kWh): allow more time or more power")


def _baseline_flex(p: PlanProblem) -> _Flex:
    """Without a plan: the battery idle, the EV at full power from its earliest start."""
    flex = _Flex.idle(p.slots)
    if p.battery is not None:
        flex = _Flex(flex.charge, flex.discharge, np.full(p.slots, p.battery.soc_kwh), flex.ev)
    if p.ev is not None:
        per_slot = p.ev.max_power_w * p.slot.total_seconds() / 3600.0 / 1000.0
        left = p.ev.energy_kwh
        for t in _ev_slots(p, p.ev):
            flex.ev[t] = min(per_slot, left)
            left -= flex.ev[t]
    return flex


def _layout(p: PlanProblem, load: DeferrableLoad) -> _Layout:
    slot_s = p.slot.total_seconds()
    slot_h = slot_s / 3600.0
    n_slots = math.ceil(load.duration.total_seconds() / slot_s - 1e-9)
    first_ok = max(0, math.ceil((load.earliest - p.start).total_seconds() / slot_s - 1e-9))
    if load.interruptible:
        energy = load.energy_kwh * 1000.0 / n_slots
        last = math.floor((load.deadline - p.start).total_seconds() / slot_s + 1e-9)  # slots ending by deadline
        candidates = range(first_ok, min(last, p.slots))
        options = tuple(_Option(np.array([t]), np.array([energy]), np.array([load.power_w]))
                        for t in candidates)
        if len(options) < n_slots:
            raise PlanError(f"load {load.name!r} needs {n_slots} slots of {_minutes(p.slot)} between "
                            f"{_at(p, load.earliest)} and {_at(p, load.deadline)} inside the horizon "
                            f"{_at(p, p.start)} to {_at(p, p.slot_start(p.slots))}; only {len(options)} fit")
        return _Layout(load, options, n_slots)
    if load.profile_wh:
        energies = np.asarray(load.profile_wh, dtype=float)
        powers = energies / slot_h
    else:
        hours = load.duration.total_seconds() / 3600.0
        used = np.minimum(slot_h, hours - slot_h * np.arange(n_slots))
        energies = load.power_w * used
        powers = np.full(n_slots, load.power_w)
    fitting: list[_Option] = []
    for s in range(first_ok, p.slots - len(energies) + 1):
        if p.slot_start(s) + load.duration > load.deadline:
            break
        fitting.append(_Option(np.arange(s, s + len(energies)), energies, powers))
    if not fitting:
        raise PlanError(f"load {load.name!r} ({_hours(load.duration)}) does not fit between its earliest "
                        f"start {_at(p, load.earliest)} and deadline {_at(p, load.deadline)} inside the "
                        f"horizon {_at(p, p.start)} to {_at(p, p.slot_start(p.slots))} "
                        f"(starts are on {_minutes(p.slot)} slots)")
    return _Layout(load, tuple(fitting), 1)


def _headroom(p: PlanProblem) -> np.ndarray:
    if p.power_limit_w is None:
        return np.full(p.slots, np.inf)
    return np.maximum(0.0, p.power_limit_w - p.net_base_w)


def _check_each_fits(p: PlanProblem, layouts: list[_Layout]) -> None:
    if p.power_limit_w is None:
        return
    room = _headroom(p)
    for layout in layouts:
        fitting = [o for o in layout.options if (o.power_w <= room[o.slots] + 1e-9).all()]
        if len(fitting) < layout.count:
            load = layout.load
            raise PlanError(f"load {load.name!r} ({load.power_w:,.0f} W) never fits under the "
                            f"{p.power_limit_w:,.0f} W limit between {_at(p, load.earliest)} and "
                            f"{_at(p, load.deadline)}: the base load leaves at most "
                            f"{room[np.unique(np.concatenate([o.slots for o in layout.options]))].max():,.0f} W; "
                            "raise the limit or widen the window")


# ---------------------------------------------------------------------- solvers

def _solve_milp(p: PlanProblem, layouts: list[_Layout],
                time_limit_s: float) -> tuple[list[tuple[int, ...]], _Flex]:
    n = p.slots
    slot_h = p.slot.total_seconds() / 3600.0
    imp_price = np.asarray(p.import_price, dtype=float)
    exp_price = np.zeros(n) if p.export_price is None else np.asarray(p.export_price, dtype=float)
    base_kwh = p.net_base_w * slot_h / 1000.0
    bat, ev = p.battery, p.ev
    options = [(j, o) for j, layout in enumerate(layouts) for o in layout.options]
    n_y = len(options)
    imp0, exp0 = n_y, n_y + n  # grid import / export (kWh) per slot
    # Export may only pay more than import where the solver could otherwise import to export.
    max_flex_kwh = ((bat.charge_w + bat.discharge_w if bat else 0.0) + (ev.max_power_w if ev else 0.0)) * slot_h / 1000
    max_load_kwh = sum(max(o.energy_wh.max() for o in layout.options) * layout.count
                       for layout in layouts) / 1000.0 + max_flex_kwh
    big_m = np.abs(base_kwh) + max_load_kwh + 1.0
    z_slots = np.flatnonzero(exp_price > imp_price)
    z0 = n_y + 2 * n
    n_var = z0 + len(z_slots)
    # Battery: charge, discharge, state of charge at each slot's end, and a charging binary.
    ch0, dis0, soc0, u0 = n_var, n_var + n, n_var + 2 * n, n_var + 3 * n
    if bat is not None:
        n_var += 4 * n
    # EV: energy per slot, and an on binary when the charger has a minimum power.
    ev0, w0 = n_var, n_var + n
    ev_min = ev is not None and ev.min_power_w > 0
    if ev is not None:
        n_var += 2 * n if ev_min else n

    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0

    def add(entries, lower, upper):
        nonlocal r
        for c, v in entries:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        lo.append(lower)
        hi.append(upper)
        r += 1

    # Energy balance per slot: import - export - loads - charge + discharge - EV = base - PV.
    by_slot: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for k, (_, o) in enumerate(options):
        for t, e in zip(o.slots, o.energy_wh):
            by_slot[t].append((k, -e / 1000.0))
    for t in range(n):
        flex_terms = ([(ch0 + t, -1.0), (dis0 + t, 1.0)] if bat is not None else []) + \
                     ([(ev0 + t, -1.0)] if ev is not None else [])
        add([(imp0 + t, 1.0), (exp0 + t, -1.0)] + by_slot[t] + flex_terms, base_kwh[t], base_kwh[t])
    # Each load placed once (or in `count` slots when interruptible).
    for j, layout in enumerate(layouts):
        add([(k, 1.0) for k, (jj, _) in enumerate(options) if jj == j], layout.count, layout.count)
    # Household limit.
    if p.power_limit_w is not None:
        room = _headroom(p)
        power_by_slot: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        for k, (_, o) in enumerate(options):
            for t, w in zip(o.slots, o.power_w):
                power_by_slot[t].append((k, w / 1000.0))
        for t in range(n):
            if power_by_slot[t]:
                add(power_by_slot[t], -np.inf, room[t] / 1000.0)
            if bat is not None or ev is not None:
                # What the battery and the EV add never lifts import over the limit (a base load
                # already over it is not the plan's doing).
                add([(imp0 + t, 1.0)], -np.inf, max(p.power_limit_w * slot_h / 1000.0, base_kwh[t]))
    # Import and export exclusive where export pays more.
    for i, t in enumerate(z_slots):
        add([(imp0 + t, 1.0), (z0 + i, -big_m[t])], -np.inf, 0.0)
        add([(exp0 + t, 1.0), (z0 + i, big_m[t])], -np.inf, big_m[t])

    lower = np.zeros(n_var)
    upper = np.full(n_var, np.inf)
    integrality = np.zeros(n_var)
    integrality[:n_y] = 1
    upper[:n_y] = 1
    integrality[z0:z0 + len(z_slots)] = 1
    upper[z0:z0 + len(z_slots)] = 1
    if bat is not None:
        eta = math.sqrt(bat.efficiency)
        ch_max, dis_max = bat.charge_w * slot_h / 1000.0, bat.discharge_w * slot_h / 1000.0
        upper[ch0:ch0 + n] = ch_max
        upper[dis0:dis0 + n] = dis_max
        lower[soc0:soc0 + n] = bat.min_soc_kwh
        upper[soc0:soc0 + n] = bat.upper_kwh
        lower[soc0 + n - 1] = max(bat.min_soc_kwh, min(bat.target_end_kwh, bat.upper_kwh))
        integrality[u0:u0 + n] = 1
        upper[u0:u0 + n] = 1
        for t in range(n):
            # soc[t] = soc[t-1] + eta x charge - discharge / eta
            previous = [(soc0 + t - 1, -1.0)] if t else []
            start = 0.0 if t else bat.soc_kwh
            add([(soc0 + t, 1.0), (ch0 + t, -eta), (dis0 + t, 1.0 / eta)] + previous, start, start)
            add([(ch0 + t, 1.0), (u0 + t, -ch_max)], -np.inf, 0.0)
            add([(dis0 + t, 1.0), (u0 + t, dis_max)], -np.inf, dis_max)
    if ev is not None:
        allowed = _ev_slots(p, ev)
        ev_max = ev.max_power_w * slot_h / 1000.0
        upper[ev0 + allowed] = ev_max
        add([(ev0 + int(t), 1.0) for t in allowed], ev.energy_kwh, ev.energy_kwh)
        if ev_min:
            integrality[w0:w0 + n] = 1
            upper[w0 + allowed] = 1
            upper[ev0:ev0 + n] = np.inf  # bounded by the on binary below
            for t in range(n):
                add([(ev0 + t, 1.0), (w0 + t, -ev_max)], -np.inf, 0.0)
                add([(ev0 + t, 1.0), (w0 + t, -ev.min_power_w * slot_h / 1000.0)], 0.0, np.inf)

    c = np.zeros(n_var)
    c[imp0:imp0 + n] = imp_price
    c[exp0:exp0 + n] = -exp_price
    matrix = coo_array((vals, (rows, cols)), shape=(r, n_var)).tocsr()
    result = milp(c, integrality=integrality, bounds=Bounds(lower, upper),
                  constraints=LinearConstraint(matrix, lo, hi),
                  options={"time_limit": time_limit_s, "mip_rel_gap": 0.0, "disp": False})
    if result.status == 2:
        raise PlanError(_infeasible_message(p, layouts))
    if result.x is None:
        raise PlanError(f"the solver found no schedule: {result.message}")
    if result.status != 0:
        raise PlanError(f"the solver stopped before proving the optimum ({result.message}); "
                        "plan fewer loads or a shorter horizon")
    x = result.x
    chosen: list[list[int]] = [[] for _ in layouts]
    starts = {id(o): i for layout in layouts for i, o in enumerate(layout.options)}
    for k, (j, o) in enumerate(options):
        if x[k] > 0.5:
            chosen[j].append(starts[id(o)])
    flex = _Flex.idle(n)
    if bat is not None:
        # Clipped to the bounds: the solver's tolerance leaves -1e-12 where 0 is meant.
        flex = _Flex(np.clip(x[ch0:ch0 + n], 0, ch_max), np.clip(x[dis0:dis0 + n], 0, dis_max),
                     np.clip(x[soc0:soc0 + n], bat.min_soc_kwh, bat.upper_kwh), flex.ev)
    if ev is not None:
        flex = _Flex(flex.charge, flex.discharge, flex.soc, np.clip(x[ev0:ev0 + n], 0, None))
    return [tuple(sorted(c)) for c in chosen], flex


def _solve_enumerate(p: PlanProblem, layouts: list[_Layout]) -> list[tuple[int, ...]]:
    per_load = [list(itertools.combinations(range(len(layout.options)), layout.count)) for layout in layouts]
    total = math.prod(len(c) for c in per_load)
    if total > _ENUMERATION_LIMIT:
        raise PlanError(f"{total:,} combinations are too many to enumerate; use the milp solver")
    room = _headroom(p)
    base_wh = p.net_base_w * p.slot.total_seconds() / 3600.0
    if len(layouts) == 1 and layouts[0].count == 1:
        # One load: every start at once, as a matrix of net energy (starts x slots).
        opts = layouts[0].options
        net = np.tile(base_wh, (len(opts), 1))
        fits = np.ones(len(opts), dtype=bool)
        for i, o in enumerate(opts):
            net[i, o.slots] += o.energy_wh
            fits[i] = (o.power_w <= room[o.slots] + 1e-9).all()
        imp = np.asarray(p.import_price)
        exp = np.zeros(p.slots) if p.export_price is None else np.asarray(p.export_price)
        costs = np.where(net > 0, net * imp, net * exp).sum(axis=1) / 1000.0
        costs[~fits] = np.inf
        return [(int(np.argmin(costs)),)]
    best, best_cost = None, math.inf
    for combo in itertools.product(*per_load):
        net, power = _apply(p, layouts, list(combo), base_wh)
        if (power > room + 1e-9).any():
            continue
        cost = schedule_cost(p, net)
        if cost < best_cost - 1e-12:
            best, best_cost = list(combo), cost
    if best is None:
        raise PlanError(_infeasible_message(p, layouts))
    return best


def _apply(p: PlanProblem, layouts: list[_Layout], choice: list[tuple[int, ...]],
           base_wh: np.ndarray, skip: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Net energy (Wh) and load power (W) per slot for a choice of options."""
    net = base_wh.copy()
    power = np.zeros(p.slots)
    for j, (layout, picks) in enumerate(zip(layouts, choice)):
        if j == skip:
            continue
        for i in picks:
            o = layout.options[i]
            net[o.slots] += o.energy_wh
            power[o.slots] += o.power_w
    return net, power


def _plan(p: PlanProblem, layouts: list[_Layout], choice: list[tuple[int, ...]],
          baseline: list[tuple[int, ...]], solver: str, flex: _Flex, b_flex: _Flex) -> Plan:
    slot_h = p.slot.total_seconds() / 3600.0
    base_w = p.net_base_w
    base_wh = base_w * slot_h
    net, power = _apply(p, layouts, choice, base_wh)
    b_net, b_power = _apply(p, layouts, baseline, base_wh)
    net, b_net = net + flex.net_kwh * 1000.0, b_net + b_flex.net_kwh * 1000.0
    cost, b_cost = schedule_cost(p, net), schedule_cost(p, b_net)
    room = _headroom(p)
    loads = []
    for j, layout in enumerate(layouts):
        without = schedule_cost(p, _apply(p, layouts, choice, base_wh, skip=j)[0] + flex.net_kwh * 1000.0)
        b_without = schedule_cost(p, _apply(p, layouts, baseline, base_wh, skip=j)[0] + b_flex.net_kwh * 1000.0)
        slots = sorted(int(t) for i in choice[j] for t in layout.options[i].slots)
        b_slots = sorted(int(t) for i in baseline[j] for t in layout.options[i].slots)
        start = p.slot_start(slots[0])
        end = (start + layout.load.duration if layout.count == 1 else p.slot_start(slots[-1] + 1))
        loads.append(ScheduledLoad(layout.load.name, start, end, tuple(p.slot_start(t) for t in slots),
                                   layout.load.energy_kwh, cost - without, p.slot_start(b_slots[0]),
                                   b_cost - b_without))
    flex_w = (flex.charge + flex.ev) * 1000.0 / slot_h
    b_flex_w = (b_flex.charge + b_flex.ev) * 1000.0 / slot_h
    return Plan(tuple(loads), cost, b_cost, b_cost - cost, float((base_w + power + flex_w).max()),
                float((base_w + b_power + b_flex_w).max()), bool((b_power <= room + 1e-9).all()),
                p.power_limit_w, p.currency, solver,
                _schedule(p, layouts, choice, flex, net), _schedule(p, layouts, baseline, b_flex, b_net))


def _schedule(p: PlanProblem, layouts: list[_Layout], choice: list[tuple[int, ...]], flex: _Flex,
              net_wh: np.ndarray) -> tuple[PlanSlot, ...]:
    slot_h = p.slot.total_seconds() / 3600.0
    loads_wh = _apply(p, layouts, choice, np.zeros(p.slots))[0]
    pv = np.zeros(p.slots) if p.pv_w is None else np.asarray(p.pv_w, dtype=float)
    exp = np.zeros(p.slots) if p.export_price is None else np.asarray(p.export_price, dtype=float)
    to_w = 1000.0 / slot_h
    return tuple(
        PlanSlot(p.slot_start(t), float(p.import_price[t]), float(exp[t]), float(p.base_load_w[t]),
                 float(pv[t]), float(loads_wh[t] / slot_h),
                 float((flex.charge[t] - flex.discharge[t]) * to_w),
                 None if flex.soc is None else float(flex.soc[t]), float(flex.ev[t] * to_w),
                 float(net_wh[t] / slot_h))
        for t in range(p.slots))


def _infeasible_message(p: PlanProblem, layouts: list[_Layout]) -> str:
    names = ", ".join(repr(layout.load.name) for layout in layouts)
    return (f"no schedule keeps the household under {p.power_limit_w:,.0f} W (base load plus loads "
            f"{names}): each load fits alone but not all together in their windows; raise the limit "
            "or widen the windows")


# ---------------------------------------------------------------------- formatting

def _at(p: PlanProblem, ts: datetime) -> str:
    return ts.astimezone(ZoneInfo(p.display_tz)).strftime("%Y-%m-%d %H:%M %Z")


def _hours(d: timedelta) -> str:
    return f"{d / timedelta(hours=1):g} h"


def _minutes(d: timedelta) -> str:
    return f"{d / timedelta(minutes=1):g}-minute"


def _seconds(ts: datetime) -> float:
    return (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()
