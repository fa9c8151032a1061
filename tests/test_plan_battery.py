"""The day-ahead plan with a battery, PV and an EV: physical limits hold in every slot, the cost
matches an independent LP formulation, and `shems plan --battery ... --pv-kwp ... --json` prints
the schedule per 15 minutes with the cost with and without the plan."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.optimize import linprog

from pipeline.cli import main
from pipeline.energy.optimize import Battery, DeferrableLoad, EvCharge, PlanError, PlanProblem, optimize
from pipeline.energy.plan_input import parse_battery_option, parse_ev_option
from pipeline.energy.solar import clear_sky_pv_w, yield_scale

UTC = timezone.utc
T0 = datetime(2024, 6, 5, tzinfo=UTC)
SLOT = timedelta(minutes=15)
N = 96


def tou_prices() -> tuple[float, ...]:
    """Economy 7 with an evening peak, as in deploy/tariffs.example.toml (UTC for simplicity)."""
    out = []
    for t in range(N):
        hour = t / 4
        out.append(0.09 if 0.5 <= hour < 7.5 else 0.38 if 16 <= hour < 19 else 0.28)
    return tuple(out)


def household_base() -> tuple[float, ...]:
    """A morning and an evening peak on a 300 W floor."""
    return tuple(300 + 900 * math.exp(-((t / 4 - 8) ** 2)) + 1500 * math.exp(-((t / 4 - 18.5) ** 2) / 2)
                 for t in range(N))


def independent_lp_cost(prices, base_w, export_price, battery: Battery, pv_w=None) -> float:
    """The same battery problem written independently: the state of charge as cumulative sums
    of charge and discharge (no state variables, no binaries), grid import and export split.
    Variables: import[N], export[N], charge[N], discharge[N] (kWh per slot)."""
    h = SLOT.total_seconds() / 3600
    net = (np.asarray(base_w) - (np.asarray(pv_w) if pv_w is not None else 0)) * h / 1000
    eta = math.sqrt(battery.efficiency)
    c = np.concatenate([prices, -np.asarray(export_price), np.zeros(N), np.zeros(N)])
    # import - export - charge + discharge = net
    a_eq = np.hstack([np.eye(N), -np.eye(N), -np.eye(N), np.eye(N)])
    b_eq = net
    lower_tri = np.tril(np.ones((N, N)))
    # soc_t = soc0 + sum_{k<=t} (eta c_k - d_k / eta) within [min, max]; the last >= end target.
    soc_rows = np.hstack([np.zeros((N, 2 * N)), eta * lower_tri, -lower_tri / eta])
    a_ub = np.vstack([soc_rows, -soc_rows, -soc_rows[-1:]])
    b_ub = np.concatenate([np.full(N, battery.upper_kwh - battery.soc_kwh),
                           np.full(N, battery.soc_kwh - battery.min_soc_kwh),
                           [battery.soc_kwh - battery.target_end_kwh]])
    bounds = ([(0, None)] * (2 * N) + [(0, battery.charge_w * h / 1000)] * N
              + [(0, battery.discharge_w * h / 1000)] * N)
    result = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert result.status == 0, result.message
    return float(result.fun)


def assert_physical(plan, battery: Battery | None, problem: PlanProblem):
    h = SLOT.total_seconds() / 3600
    soc = battery.soc_kwh if battery else None
    eta = math.sqrt(battery.efficiency) if battery else 1.0
    for x in plan.schedule:
        if battery is None:
            assert x.battery_w == 0
            continue
        # Never both at once: battery_w is the net, so check the solver's charge/discharge split
        # through the state of charge: a slot's change must be explained by one direction alone.
        assert -battery.discharge_w - 1e-6 <= x.battery_w <= battery.charge_w + 1e-6
        delta = x.soc_kwh - soc
        if x.battery_w > 1e-6:
            assert delta == pytest.approx(x.battery_w * h / 1000 * eta, abs=1e-6)
        elif x.battery_w < -1e-6:
            assert delta == pytest.approx(x.battery_w * h / 1000 / eta, abs=1e-6)
        else:
            assert delta == pytest.approx(0, abs=1e-6)
        assert battery.min_soc_kwh - 1e-6 <= x.soc_kwh <= battery.upper_kwh + 1e-6
        soc = x.soc_kwh
    if battery is not None:
        assert soc >= battery.target_end_kwh - 1e-6
    # Energy balance per slot: grid = base - pv + loads + battery + ev.
    for x in plan.schedule:
        assert x.grid_w == pytest.approx(x.base_w - x.pv_w + x.loads_w + x.battery_w + x.ev_w, abs=1e-6)


BATTERY = Battery(capacity_kwh=10, charge_w=3000, discharge_w=3000, efficiency=0.9, soc_kwh=2.0,
                  min_soc_kwh=1.0, max_soc_kwh=9.5)


def test_battery_earns_the_time_of_use_spread_as_an_independent_lp_does():
    prices, base = tou_prices(), household_base()
    exports = (0.05,) * N
    problem = PlanProblem(T0, SLOT, prices, base, (), exports, None, "GBP", battery=BATTERY)
    plan = optimize(problem)
    assert_physical(plan, BATTERY, problem)
    reference = independent_lp_cost(prices, base, exports, BATTERY)
    assert plan.cost == pytest.approx(reference, rel=0.005)
    # It does earn the spread: cheaper than idle, by charging at night and discharging at peak.
    assert plan.saving > 0.5
    night = [x for x in plan.schedule if x.import_price == 0.09]
    peak = [x for x in plan.schedule if x.import_price == 0.38]
    assert sum(x.battery_w for x in night) > 0 and sum(x.battery_w for x in peak) < 0


@pytest.mark.parametrize("seed", range(6))
def test_random_days_match_the_independent_lp(seed):
    rng = np.random.default_rng(seed)
    prices = tuple(float(p) for p in rng.uniform(0.05, 0.45, N))
    exports = tuple(float(p) * 0.3 for p in prices)
    base = tuple(float(b) for b in rng.uniform(100, 2500, N))
    pv = clear_sky_pv_w(T0, SLOT, N, float(rng.uniform(0, 6)), 51.5, -0.13)
    battery = Battery(float(rng.uniform(3, 15)), float(rng.uniform(1000, 5000)), float(rng.uniform(1000, 5000)),
                      float(rng.uniform(0.75, 0.97)), 0.0, 0.0)
    battery = Battery(battery.capacity_kwh, battery.charge_w, battery.discharge_w, battery.efficiency,
                      battery.capacity_kwh * float(rng.uniform(0.1, 0.9)), battery.capacity_kwh * 0.1)
    problem = PlanProblem(T0, SLOT, prices, base, (), exports, None, "GBP", pv_w=pv, battery=battery)
    plan = optimize(problem)
    assert_physical(plan, battery, problem)
    assert plan.cost == pytest.approx(independent_lp_cost(prices, base, exports, battery, pv), rel=0.005, abs=1e-6)


def test_negative_prices_do_not_make_the_battery_charge_and_discharge_at_once():
    # Paid to import: an LP would burn energy through the battery's losses by charging and
    # discharging in the same slot; the binary forbids it, so the state of charge explains every
    # slot by one direction (assert_physical), and the battery fills up instead.
    prices = tuple(-0.10 if 40 <= t < 48 else 0.25 for t in range(N))
    problem = PlanProblem(T0, SLOT, prices, (500.0,) * N, (), (0.0,) * N, None, "EUR", battery=BATTERY)
    plan = optimize(problem)
    assert_physical(plan, BATTERY, problem)
    assert max(x.soc_kwh for x in plan.schedule[40:48]) > BATTERY.soc_kwh + 1


def test_ev_gets_its_energy_by_the_deadline_in_the_cheapest_slots_within_power():
    prices = tou_prices()
    ev = EvCharge(20.0, 7400.0, T0 + timedelta(hours=18), T0 + timedelta(days=1, hours=7), min_power_w=1400.0)
    # 2 days of slots so the night after the evening fits.
    prices2 = prices + prices
    problem = PlanProblem(T0, SLOT, prices2, (300.0,) * 2 * N, (), None, None, "GBP", ev=ev)
    plan = optimize(problem)
    delivered = sum(x.ev_w for x in plan.schedule) * SLOT.total_seconds() / 3600 / 1000
    assert delivered == pytest.approx(20.0, abs=1e-6)
    for x in plan.schedule:
        assert x.ev_w == 0 or 1400 - 1e-6 <= x.ev_w <= 7400 + 1e-6
        if x.ev_w:
            assert ev.earliest <= x.start and x.start + SLOT <= ev.deadline
            assert x.import_price == 0.09  # the night rate holds 7 h x 7.4 kW, plenty
    # Without the plan it charges at once, at the evening peak.
    assert plan.baseline_schedule[18 * 4].ev_w == pytest.approx(7400)
    assert plan.saving > 0


def test_battery_and_ev_respect_the_import_limit():
    prices = tou_prices()
    ev = EvCharge(10.0, 7400.0, T0, T0 + timedelta(hours=8))
    problem = PlanProblem(T0, SLOT, prices, (500.0,) * N, (), None, 6000.0, "GBP", battery=BATTERY, ev=ev)
    plan = optimize(problem)
    assert_physical(plan, BATTERY, problem)
    assert max(x.grid_w for x in plan.schedule) <= 6000 + 1e-6


def test_loads_battery_and_pv_together():
    load = DeferrableLoad("washer", 2000.0, timedelta(hours=1.5), T0 + timedelta(hours=6), T0 + timedelta(hours=20))
    pv = clear_sky_pv_w(T0, SLOT, N, 4.0, 51.5, -0.13)
    problem = PlanProblem(T0, SLOT, tou_prices(), household_base(), (load,), (0.05,) * N, None, "GBP",
                          pv_w=pv, battery=BATTERY)
    plan = optimize(problem)
    assert_physical(plan, BATTERY, problem)
    assert plan.cost <= plan.baseline_cost + 1e-9
    assert len(plan.loads) == 1


def test_infeasible_ev_says_why():
    ev = EvCharge(50.0, 3000.0, T0, T0 + timedelta(hours=2))
    with pytest.raises(PlanError, match="does not fit"):
        optimize(PlanProblem(T0, SLOT, tou_prices(), (0.0,) * N, (), ev=ev))


def test_clear_sky_pv_is_zero_at_night_and_peaks_near_solar_noon():
    pv = clear_sky_pv_w(T0, timedelta(hours=1), 24, 4.0, 51.5, -0.13)
    assert pv[0] == 0 and pv[23] == 0
    assert max(range(24), key=lambda i: pv[i]) in (11, 12)
    assert 2000 < max(pv) < 4000  # 4 kWp in June at London's latitude, horizontal, 0.8 ratio
    winter = clear_sky_pv_w(datetime(2024, 12, 21, tzinfo=UTC), timedelta(hours=1), 24, 4.0, 51.5, -0.13)
    assert sum(winter) < sum(pv) / 4
    assert yield_scale([0, 500, 800, 0], [0, 1000, 1000, 0]) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        yield_scale([1, 2], [0, 0])


@pytest.mark.parametrize("text, message", [
    ("capacity_kwh=10", "power_kw"),
    ("capacity_kwh=10,power_kw=5,efficiency=1.5", "round-trip"),
    ("capacity_kwh=10,power_kw=5,soc=150%", "between 0 and 1"),
    ("capacity_kwh=-1,power_kw=5", "> 0"),
    ("capacity_kwh=10,power_kw=5,colour=red", "unknown key"),
    ("capacity_kwh", "key=value"),
])
def test_bad_battery_options_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_battery_option(text)


def test_battery_option_reads_shares_and_percentages():
    b = parse_battery_option("capacity_kwh=13.5,power_kw=5,efficiency=0.9,soc=40%,min_soc=0.1")
    assert (b.capacity_kwh, b.soc_kwh, b.min_soc_kwh, b.charge_w) == (13.5, pytest.approx(5.4), pytest.approx(1.35), 5000)
    ev = parse_ev_option("energy_kwh=20,power_kw=7.4,deadline=07:00")
    assert ev.earliest is None and ev.deadline == "07:00"


def run(capsys, *argv):
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plans_battery_pv_and_ev_as_json(capsys, monkeypatch):
    from pathlib import Path
    book = Path(__file__).resolve().parents[1] / "deploy" / "tariffs.example.toml"
    code, out, err = run(capsys, "--tariffs", str(book), "--date", "2024-06-05", "--base-load-w", "400",
                         "--battery", "capacity_kwh=10,power_kw=3,efficiency=0.9,soc=0.2",
                         "--pv-kwp", "4", "--ev", "energy_kwh=15,power_kw=7.4,earliest=18:00,deadline=07:00",
                         "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    schedule = result["schedule"]
    starts = [datetime.fromisoformat(x["start"]) for x in schedule]
    assert all(b - a == timedelta(minutes=15) for a, b in zip(starts, starts[1:]))
    # From local midnight of 2024-06-05 (BST) to the EV's 07:00 deadline the next morning.
    assert starts[0] == datetime(2024, 6, 4, 23, tzinfo=UTC) and len(schedule) == 31 * 4
    assert result["cost"] < result["baseline_cost"]
    assert sum(x["ev_w"] for x in schedule) * 0.25 / 1000 == pytest.approx(15, abs=1e-3)
    assert any(x["pv_w"] > 1000 for x in schedule)
    assert all(x["soc_kwh"] is not None and 0 <= x["soc_kwh"] <= 10 for x in schedule)


def test_cli_rejects_a_bad_battery_in_one_line(capsys):
    code, out, err = run(capsys, "--battery", "capacity_kwh=ten,power_kw=3")
    assert code == 2
    assert "capacity_kwh" in err and "Traceback" not in err


def test_plan_a_home_from_the_store_and_the_registry(capsys, sqlite_url, tmp_path):
    """`shems plan --home H --store-url URL --registry FILE --json`: the base load from the home's
    newest stored forecast, the tariff the flow stored, the battery and PV from the registry."""
    from pathlib import Path

    from pipeline.energy.tariff import book_from_toml
    from pipeline.records import Forecast
    from sinks.base import Batch
    from sinks.stores import open_store

    book_path = Path(__file__).resolve().parents[1] / "deploy" / "tariffs.example.toml"
    store = open_store(sqlite_url)
    store.migrate()
    store.upsert_tariffs(book_from_toml(book_path).to_rows())
    made = datetime(2024, 6, 4, 20, tzinfo=UTC)
    start = datetime(2024, 6, 4, 23, tzinfo=UTC)  # 2024-06-05 00:00 BST
    store.write(Batch(forecasts=[Forecast("h1", made, start + timedelta(minutes=15 * i), 15, 15 * (i + 1),
                                          400.0 + (900.0 if 17 * 4 <= i < 20 * 4 else 0.0), 0.0, 0.0, "test")
                                 for i in range(2 * 96)]))
    store.close()
    registry = tmp_path / "registry.toml"
    registry.write_text('''
[[device]]
source = "native"
vendor_id = "house-battery"
home_id = "h1"
device_id = "house-battery"
kind = "battery"
specs = { capacity_kwh = 8, power_kw = 2.5, efficiency = 0.92, soc = 0.3 }

[[device]]
source = "native"
vendor_id = "roof"
home_id = "h1"
device_id = "roof"
kind = "pv"
specs = { kwp = 3.5 }

[[home]]
home_id = "h1"
timezone = "Europe/London"
latitude = 53.4
longitude = -2.2
''')
    code, out, err = run(capsys, "--home", "h1", "--store-url", sqlite_url, "--registry", str(registry),
                         "--date", "2024-06-05", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    schedule = result["schedule"]
    assert len(schedule) == 96 and schedule[0]["start"].startswith("2024-06-04T23:00")
    assert schedule[18 * 4]["base_w"] == pytest.approx(1300.0)  # the forecast's evening, 18:00 BST
    assert max(x["pv_w"] for x in schedule) > 1500  # 3.5 kWp in June
    assert schedule[0]["soc_kwh"] is not None and max(x["soc_kwh"] for x in schedule) <= 8 + 1e-6
    assert any(x["battery_w"] < -100 for x in schedule)  # it discharges into the dear evening
    assert result["cost"] < result["baseline_cost"]
    # A registry spec the planner does not know is refused in one line.
    registry.write_text(registry.read_text().replace("soc = 0.3", "colour = 3"))
    code, _, err = run(capsys, "--home", "h1", "--store-url", sqlite_url, "--registry", str(registry), "--json")
    assert code == 2 and "unknown spec 'colour'" in err
