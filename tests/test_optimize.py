"""The load scheduler against brute force over every start combination, and its errors."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.energy.optimize import DeferrableLoad, PlanError, PlanProblem, base_load_from_forecasts, optimize
from pipeline.records import Forecast

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 18, tzinfo=UTC)


# ---------------------------------------------------------------- an independent brute force

def _placements(load: DeferrableLoad, n: int, slot_h: float) -> list[dict[int, tuple[float, float]]]:
    """Every way to place a load: {slot: (energy Wh, power W)}, written from the docs, not the code."""
    e_idx = (load.earliest - T0) / timedelta(hours=slot_h)
    d_idx = (load.deadline - T0) / timedelta(hours=slot_h)
    dur_h = load.duration / timedelta(hours=1)
    out = []
    if load.interruptible:
        k = math.ceil(dur_h / slot_h - 1e-9)
        allowed = [t for t in range(n) if t >= e_idx - 1e-9 and t + 1 <= d_idx + 1e-9]
        for combo in itertools.combinations(allowed, k):
            out.append({t: (load.power_w * dur_h / k, load.power_w) for t in combo})
        return out
    for s in range(n):
        if s < e_idx - 1e-9 or s * slot_h + dur_h > d_idx * slot_h + 1e-9:
            continue
        placed = {}
        for t in range(s, n):
            overlap = min((t + 1) * slot_h, s * slot_h + dur_h) - t * slot_h
            if overlap > 1e-12:
                placed[t] = (load.power_w * overlap, load.power_w)
        if s * slot_h + dur_h <= n * slot_h + 1e-9:
            out.append(placed)
    return out


def _cost(p: PlanProblem, net_wh: list[float]) -> float:
    exp = p.export_price or [0.0] * p.slots
    return sum((e * i if e > 0 else e * x) / 1000 for e, i, x in zip(net_wh, p.import_price, exp))


def brute_force(p: PlanProblem, with_limit: bool = True) -> tuple[float, list[dict]]:
    slot_h = p.slot / timedelta(hours=1)
    best = (math.inf, None)
    for combo in itertools.product(*[_placements(load, p.slots, slot_h) for load in p.loads]):
        net = [b * slot_h for b in p.base_load_w]
        power = [0.0] * p.slots
        for placed in combo:
            for t, (e, w) in placed.items():
                net[t] += e
                power[t] += w
        if with_limit and p.power_limit_w is not None and any(
                w > 0 and w > max(0.0, p.power_limit_w - b) + 1e-9 for w, b in zip(power, p.base_load_w)):
            continue
        cost = _cost(p, net)
        if cost < best[0]:
            best = (cost, list(combo))
    return best


def random_problem(seed: int, pv: bool, export_above_import: bool) -> PlanProblem:
    rng = random.Random(seed)
    slot_h = rng.choice([1.0, 0.5])
    n = rng.randint(8, 12)
    prices = [round(rng.uniform(0.05, 0.45), 3) for _ in range(n)]
    exports = [round(rng.uniform(0.0, 0.08), 3) for _ in range(n)]
    if export_above_import:
        for t in rng.sample(range(n), 2):
            exports[t] = prices[t] + 0.1
    base = [rng.uniform(150, 1500) for _ in range(n)]
    if pv:
        for t in range(2, min(n, 7)):
            base[t] -= rng.uniform(500, 3000)
    loads = []
    for j in range(rng.randint(2, 3)):
        dur = rng.choice([1, 1.5, 2, 3]) * slot_h if rng.random() < 0.7 else rng.choice([0.5, 1.0])
        earliest = rng.randint(0, n // 3)
        deadline = min(n, earliest + math.ceil(dur / slot_h) + rng.randint(1, 6))
        loads.append(DeferrableLoad(
            f"load{j}", rng.choice([800.0, 1500.0, 2200.0, 3000.0]), timedelta(hours=dur),
            T0 + timedelta(hours=earliest * slot_h), T0 + timedelta(hours=deadline * slot_h),
            interruptible=rng.random() < 0.25))
    return PlanProblem(T0, timedelta(hours=slot_h), tuple(prices), tuple(base), tuple(loads),
                       tuple(exports), None, "GBP")


def with_binding_limit(p: PlanProblem) -> PlanProblem | None:
    """A limit the unconstrained optimum breaks but some schedule meets, or None."""
    _, free = brute_force(p, with_limit=False)
    power = [0.0] * p.slots
    for placed in free:
        for t, (_, w) in placed.items():
            power[t] += w
    peak = max(b + w for b, w in zip(p.base_load_w, power) if w > 0)
    for cut in (50, 200, 500, 800, 1200, 1600, 2000):
        limited = replace(p, power_limit_w=peak - cut)
        if limited.power_limit_w > 0 and brute_force(limited)[1] is not None:
            return limited
    return None


def _check(p: PlanProblem, solver: str = "milp") -> None:
    plan = optimize(p, solver=solver)
    best_cost, best = brute_force(p)
    assert best is not None
    assert plan.cost == pytest.approx(best_cost, abs=1e-9)
    # The plan's own schedule, recomputed here, costs what the plan says and meets the limit.
    slot_h = p.slot / timedelta(hours=1)
    net = [b * slot_h for b in p.base_load_w]
    power = [0.0] * p.slots
    for load, s in zip(p.loads, plan.loads):
        chosen = [pl_ for pl_ in _placements(load, p.slots, slot_h)
                  if sorted(pl_) == sorted(int((ts - T0) / p.slot) for ts in s.slots)]
        assert chosen, f"{load.name} placed outside its window"
        for t, (e, w) in chosen[0].items():
            net[t] += e
            power[t] += w
        assert s.start >= load.earliest and s.end <= load.deadline
    assert _cost(p, net) == pytest.approx(plan.cost, abs=1e-9)
    if p.power_limit_w is not None:
        assert all(w == 0 or b + w <= p.power_limit_w + 1e-6 for b, w in zip(p.base_load_w, power))
    assert plan.saving == pytest.approx(plan.baseline_cost - plan.cost)
    assert plan.saving >= -1e-9 or not plan.baseline_within_limit


@pytest.mark.parametrize("seed", range(12))
def test_optimum_equals_brute_force(seed):
    _check(random_problem(seed, pv=seed % 3 == 0, export_above_import=seed % 4 == 1))


def test_optimum_equals_brute_force_with_a_binding_limit():
    # Random cases until 12 have a limit that the unconstrained optimum breaks (some cases cannot:
    # their loads never overlap).
    checked = 0
    for seed in range(100, 300):
        p = random_problem(seed, pv=seed % 2 == 0, export_above_import=False)
        limited = with_binding_limit(p)
        if limited is None:
            continue
        unconstrained = optimize(p)
        constrained = optimize(limited)
        assert unconstrained.peak_w > limited.power_limit_w, seed
        assert constrained.cost >= unconstrained.cost - 1e-9, seed
        _check(limited)
        checked += 1
        if checked == 12:
            break
    assert checked == 12


@pytest.mark.parametrize("seed", range(200, 210))
def test_enumeration_agrees_with_milp(seed):
    p = random_problem(seed, pv=seed % 2 == 0, export_above_import=seed % 3 == 0)
    assert optimize(p, "enumerate").cost == pytest.approx(optimize(p, "milp").cost, abs=1e-9)
    one = replace(p, loads=(replace(p.loads[0], interruptible=False),))
    _check(one, "enumerate")


def test_dishwasher_moves_to_the_night_rate_and_saving_is_the_price_gap():
    # 18:00 to 08:00 on hourly slots, day 0.30, night 00:30-07:30 approximated as 01:00-07:00 at 0.10.
    prices = tuple(0.10 if 7 <= t < 13 else 0.30 for t in range(14))
    load = DeferrableLoad.from_energy("dishwasher", 1.2, timedelta(hours=2), T0, T0 + timedelta(hours=14))
    plan = optimize(PlanProblem(T0, timedelta(hours=1), prices, (200.0,) * 14, (load,), currency="GBP"))
    [d] = plan.loads
    # Any 2 hours inside the cheap 6 are optimal.
    assert T0 + timedelta(hours=7) <= d.start <= T0 + timedelta(hours=11) and d.earliest_start == T0
    assert d.cost == pytest.approx(1.2 * 0.10)
    assert d.baseline_cost == pytest.approx(1.2 * 0.30)
    assert plan.saving == pytest.approx(1.2 * 0.20)


def test_pv_export_is_absorbed_at_the_export_price():
    prices = (0.30,) * 6
    exports = (0.05,) * 6
    base = (300.0, 300.0, -2000.0, -2000.0, 300.0, 300.0)  # PV exports 2 kW in slots 2-3
    load = DeferrableLoad("washer", 1000.0, timedelta(hours=2), T0, T0 + timedelta(hours=6))
    plan = optimize(PlanProblem(T0, timedelta(hours=1), prices, base, (load,), exports, None, "GBP"))
    assert plan.loads[0].start == T0 + timedelta(hours=2)
    assert plan.loads[0].cost == pytest.approx(2 * 0.05)  # export income forgone


def test_interruptible_ev_takes_the_cheapest_slots():
    prices = (0.3, 0.1, 0.4, 0.05, 0.2, 0.07, 0.5, 0.3)
    ev = DeferrableLoad("ev", 7000.0, timedelta(hours=3), T0, T0 + timedelta(hours=8), interruptible=True)
    plan = optimize(PlanProblem(T0, timedelta(hours=1), prices, (0.0,) * 8, (ev,)))
    assert [int((s - T0) / timedelta(hours=1)) for s in plan.loads[0].slots] == [1, 3, 5]
    assert plan.cost == pytest.approx(7 * (0.1 + 0.05 + 0.07))


def test_limit_keeps_two_loads_apart():
    prices = (0.1, 0.1, 0.3, 0.3)
    loads = (DeferrableLoad("a", 3000.0, timedelta(hours=1), T0, T0 + timedelta(hours=4)),
             DeferrableLoad("b", 3000.0, timedelta(hours=1), T0, T0 + timedelta(hours=4)))
    free = optimize(PlanProblem(T0, timedelta(hours=1), prices, (500.0,) * 4, loads))
    assert free.peak_w == 6500.0
    plan = optimize(PlanProblem(T0, timedelta(hours=1), prices, (500.0,) * 4, loads, power_limit_w=4000.0))
    assert sorted(s.start for s in plan.loads) == [T0, T0 + timedelta(hours=1)]
    assert plan.peak_w == 3500.0 and not plan.baseline_within_limit


@pytest.mark.parametrize("loads, limit, message", [
    ((DeferrableLoad("dw", 1000.0, timedelta(hours=3), T0, T0 + timedelta(hours=2)),), None,
     "'dw' \\(3 h\\) does not fit between its earliest start 2024-05-01 18:00 UTC and deadline "
     "2024-05-01 20:00 UTC"),
    ((DeferrableLoad("dw", 1000.0, timedelta(hours=2), T0 + timedelta(hours=5), T0 + timedelta(hours=9)),),
     None, "does not fit .* inside the horizon 2024-05-01 18:00 UTC to 2024-05-02 00:00 UTC"),
    ((DeferrableLoad("kiln", 9000.0, timedelta(hours=1), T0, T0 + timedelta(hours=6)),), 7000.0,
     "'kiln' \\(9,000 W\\) never fits under the 7,000 W limit"),
    ((DeferrableLoad("a", 3000.0, timedelta(hours=2), T0, T0 + timedelta(hours=2)),
      DeferrableLoad("b", 3000.0, timedelta(hours=2), T0, T0 + timedelta(hours=3))), 4000.0,
     "no schedule keeps the household under 4,000 W .* 'a', 'b'"),
    ((DeferrableLoad("x", 1000.0, timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=1)),),
     None, "deadline .* is not after its earliest start"),
    ((DeferrableLoad("x", 0.0, timedelta(hours=1), T0, T0 + timedelta(hours=3)),), None,
     "power must be a positive number"),
    ((DeferrableLoad("x", 100.0, timedelta(hours=1), T0, T0 + timedelta(hours=3)),
      DeferrableLoad("x", 100.0, timedelta(hours=1), T0, T0 + timedelta(hours=3))), None, "unique"),
    ((), None, "nothing to plan"),
    ((DeferrableLoad("ev", 7000.0, timedelta(hours=5), T0, T0 + timedelta(hours=4), True),), None,
     "'ev' needs 5 slots .* only 4 fit"),
])
def test_infeasible_and_bad_input_say_why(loads, limit, message):
    p = PlanProblem(T0, timedelta(hours=1), (0.2,) * 6, (500.0,) * 6, loads, power_limit_w=limit)
    with pytest.raises(PlanError, match=message):
        optimize(p)


def test_missing_prices_are_refused():
    load = DeferrableLoad("x", 100.0, timedelta(hours=1), T0, T0 + timedelta(hours=3))
    with pytest.raises(PlanError, match="import prices must be finite"):
        optimize(PlanProblem(T0, timedelta(hours=1), (0.2, float("nan"), 0.2), (0.0,) * 3, (load,)))
    with pytest.raises(PlanError, match="base load: 2 values for 3 slots"):
        optimize(PlanProblem(T0, timedelta(hours=1), (0.2,) * 3, (0.0,) * 2, (load,)))


def _forecast(made_at, target, res, yhat, home="h"):
    return Forecast(home, made_at, target, res, 0, yhat, yhat - 50, yhat + 50, "test")


def test_base_load_from_the_newest_forecast():
    old = T0 - timedelta(hours=2)
    new = T0 - timedelta(hours=1)
    rows = [_forecast(old, T0 + timedelta(minutes=15 * i), 15, 9999.0) for i in range(16)]
    rows += [_forecast(new, T0 + timedelta(minutes=15 * i), 15, 100.0 * i) for i in range(16)]
    # Hourly slots average the four quarter-hours of the newest issue.
    assert base_load_from_forecasts(rows, T0, timedelta(hours=1), 4) == (150.0, 550.0, 950.0, 1350.0)
    # Quarter-hour slots from an hourly forecast repeat the hour's value.
    hourly = [_forecast(new, T0 + timedelta(hours=i), 60, 200.0 + i) for i in range(3)]
    assert base_load_from_forecasts(hourly, T0 + timedelta(minutes=30), timedelta(minutes=15), 4) == (
        200.0, 200.0, 201.0, 201.0)
    with pytest.raises(PlanError, match="covers .* not the slot at 2024-05-01T21:00"):
        base_load_from_forecasts(hourly, T0, timedelta(hours=1), 4)
    with pytest.raises(PlanError, match="no forecast rows"):
        base_load_from_forecasts([], T0, timedelta(hours=1), 4)
    with pytest.raises(PlanError, match="several homes"):
        base_load_from_forecasts(hourly + [_forecast(new, T0, 60, 1.0, home="other")], T0,
                                 timedelta(hours=1), 1)
