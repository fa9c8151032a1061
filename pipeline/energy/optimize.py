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

    @property
    def slots(self) -> int:
        return len(self.import_price)

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
        choice = _solve_milp(problem, layouts, time_limit_s)
        name = "milp (HiGHS)"
    elif solver == "enumerate":
        choice = _solve_enumerate(problem, layouts)
        name = "enumeration"
    else:
        raise PlanError(f"unknown solver {solver!r}: use milp or enumerate")
    baseline = [tuple(range(layout.count)) for layout in layouts]
    return _plan(problem, layouts, choice, baseline, name)


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
    if not p.loads:
        raise PlanError("nothing to plan: give at least one load")
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
    return np.maximum(0.0, p.power_limit_w - np.asarray(p.base_load_w))


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

def _solve_milp(p: PlanProblem, layouts: list[_Layout], time_limit_s: float) -> list[tuple[int, ...]]:
    n = p.slots
    slot_h = p.slot.total_seconds() / 3600.0
    imp_price = np.asarray(p.import_price, dtype=float)
    exp_price = np.zeros(n) if p.export_price is None else np.asarray(p.export_price, dtype=float)
    base_kwh = np.asarray(p.base_load_w, dtype=float) * slot_h / 1000.0
    options = [(j, o) for j, layout in enumerate(layouts) for o in layout.options]
    n_y = len(options)
    imp0, exp0 = n_y, n_y + n  # grid import / export (kWh) per slot
    # Export may only pay more than import where the solver could otherwise import to export.
    max_load_kwh = sum(max(o.energy_wh.max() for o in layout.options) * layout.count
                       for layout in layouts) / 1000.0
    big_m = np.abs(base_kwh) + max_load_kwh + 1.0
    z_slots = np.flatnonzero(exp_price > imp_price)
    z0 = n_y + 2 * n
    n_var = z0 + len(z_slots)

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

    # Energy balance per slot: import - export - loads = base.
    by_slot: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for k, (_, o) in enumerate(options):
        for t, e in zip(o.slots, o.energy_wh):
            by_slot[t].append((k, -e / 1000.0))
    for t in range(n):
        add([(imp0 + t, 1.0), (exp0 + t, -1.0)] + by_slot[t], base_kwh[t], base_kwh[t])
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
    # Import and export exclusive where export pays more.
    for i, t in enumerate(z_slots):
        add([(imp0 + t, 1.0), (z0 + i, -big_m[t])], -np.inf, 0.0)
        add([(exp0 + t, 1.0), (z0 + i, big_m[t])], -np.inf, big_m[t])

    c = np.zeros(n_var)
    c[imp0:imp0 + n] = imp_price
    c[exp0:exp0 + n] = -exp_price
    integrality = np.zeros(n_var)
    integrality[:n_y] = 1
    integrality[z0:] = 1
    upper = np.full(n_var, np.inf)
    upper[:n_y] = 1
    upper[z0:] = 1
    matrix = coo_array((vals, (rows, cols)), shape=(r, n_var)).tocsr()
    result = milp(c, integrality=integrality, bounds=Bounds(np.zeros(n_var), upper),
                  constraints=LinearConstraint(matrix, lo, hi),
                  options={"time_limit": time_limit_s, "mip_rel_gap": 0.0, "disp": False})
    if result.status == 2:
        raise PlanError(_infeasible_message(p, layouts))
    if result.x is None:
        raise PlanError(f"the solver found no schedule: {result.message}")
    if result.status != 0:
        raise PlanError(f"the solver stopped before proving the optimum ({result.message}); "
                        "plan fewer loads or a shorter horizon")
    chosen: list[list[int]] = [[] for _ in layouts]
    starts = {id(o): i for layout in layouts for i, o in enumerate(layout.options)}
    for k, (j, o) in enumerate(options):
        if result.x[k] > 0.5:
            chosen[j].append(starts[id(o)])
    return [tuple(sorted(c)) for c in chosen]


def _solve_enumerate(p: PlanProblem, layouts: list[_Layout]) -> list[tuple[int, ...]]:
    per_load = [list(itertools.combinations(range(len(layout.options)), layout.count)) for layout in layouts]
    total = math.prod(len(c) for c in per_load)
    if total > _ENUMERATION_LIMIT:
        raise PlanError(f"{total:,} combinations are too many to enumerate; use the milp solver")
    room = _headroom(p)
    base_wh = np.asarray(p.base_load_w) * p.slot.total_seconds() / 3600.0
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
          baseline: list[tuple[int, ...]], solver: str) -> Plan:
    base_wh = np.asarray(p.base_load_w) * p.slot.total_seconds() / 3600.0
    base_w = np.asarray(p.base_load_w)
    net, power = _apply(p, layouts, choice, base_wh)
    b_net, b_power = _apply(p, layouts, baseline, base_wh)
    cost, b_cost = schedule_cost(p, net), schedule_cost(p, b_net)
    room = _headroom(p)
    loads = []
    for j, layout in enumerate(layouts):
        without = schedule_cost(p, _apply(p, layouts, choice, base_wh, skip=j)[0])
        b_without = schedule_cost(p, _apply(p, layouts, baseline, base_wh, skip=j)[0])
        slots = sorted(int(t) for i in choice[j] for t in layout.options[i].slots)
        b_slots = sorted(int(t) for i in baseline[j] for t in layout.options[i].slots)
        start = p.slot_start(slots[0])
        end = (start + layout.load.duration if layout.count == 1 else p.slot_start(slots[-1] + 1))
        loads.append(ScheduledLoad(layout.load.name, start, end, tuple(p.slot_start(t) for t in slots),
                                   layout.load.energy_kwh, cost - without, p.slot_start(b_slots[0]),
                                   b_cost - b_without))
    return Plan(tuple(loads), cost, b_cost, b_cost - cost, float((base_w + power).max()),
                float((base_w + b_power).max()), bool((b_power <= room + 1e-9).all()),
                p.power_limit_w, p.currency, solver)


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
