"""Energy flow (pipeline.energy.flow): the numbers of the Sankey, and the balance sources = sinks
holding exactly, for hand-made minutes and for any minutes hypothesis draws."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.energy.flow import BATTERY, EV, GRID, HOME, SOLAR, energy_flow
from pipeline.tools.simulator import SimulatedHome, simulated_day

T0 = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)


def _usage(minutes: list[dict[str, float]]) -> pl.DataFrame:
    rows = [(T0 + timedelta(minutes=i), kind, wh) for i, m in enumerate(minutes) for kind, wh in m.items()]
    return pl.DataFrame(rows, schema={"bucket": pl.Datetime("us", "UTC"), "kind": pl.Utf8, "energy_wh": pl.Float64},
                        orient="row")


def _balanced(flow) -> None:
    assert sum(flow.sources.values()) == sum(flow.sinks.values())
    for source, total in flow.sources.items():
        assert sum(x.mwh for x in flow.links if x.source == source) == total
    for sink, total in flow.sinks.items():
        assert sum(x.mwh for x in flow.links if x.sink == sink) == total
    assert all(x.mwh >= 0 for x in flow.links)
    assert flow.link(GRID, GRID) == 0 and flow.link(BATTERY, BATTERY) == 0


def test_a_sunny_hour_with_battery_and_ev_by_hand():
    # meter (net), PV, battery, EV and an appliance, Wh per minute
    flow = energy_flow(_usage([
        # solar 50 covers home 10 and EV 20, charges the battery 15, exports 5
        {"meter": -5, "pv": -50, "battery": 15, "ev": 20, "appliance": 10},
        # evening: battery discharges 8 into home 12; 4 imported
        {"meter": 4, "pv": 0, "battery": -8, "ev": 0, "appliance": 12},
        # night: grid charges the battery 30 and feeds the EV 100 and home 6
        {"meter": 136, "battery": 30, "ev": 100, "appliance": 6},
    ]))
    _balanced(flow)
    kwh = {(x.source, x.sink): x.mwh / 1000 for x in flow.links if x.mwh}  # Wh
    assert kwh == {(SOLAR, HOME): 10, (SOLAR, EV): 20, (SOLAR, BATTERY): 15, (SOLAR, GRID): 5,
                   (BATTERY, HOME): 8, (GRID, HOME): 10, (GRID, EV): 100, (GRID, BATTERY): 30}
    assert flow.sources == {GRID: 140_000, SOLAR: 50_000, BATTERY: 8_000}
    assert flow.sinks == {GRID: 5_000, BATTERY: 45_000, EV: 120_000, HOME: 28_000}
    assert flow.self_consumption == pytest.approx(45 / 50)
    assert flow.self_sufficiency == pytest.approx(1 - 110 / 148)
    assert (flow.buckets, flow.left_out_buckets) == (3, 0)


def test_minutes_that_do_not_add_up_or_lack_the_meter_are_left_out_whole():
    flow = energy_flow(_usage([
        {"meter": -30, "pv": -20, "appliance": 5},  # exports more than the PV made: left out
        {"pv": -20, "appliance": 5},  # no meter reading this minute: left out
        {"meter": 2, "pv": -3, "appliance": 5},
    ]))
    _balanced(flow)
    assert (flow.buckets, flow.left_out_buckets) == (1, 2)
    assert flow.sinks[HOME] == 5_000 and flow.sources[SOLAR] == 3_000


def test_a_home_without_a_meter_takes_the_grid_as_the_sum_of_its_devices():
    flow = energy_flow(_usage([{"pv": -10, "appliance": 4}, {"pv": -1, "appliance": 4}]))
    _balanced(flow)
    assert flow.sinks[GRID] == 6_000 and flow.sources[GRID] == 3_000 and flow.sinks[HOME] == 8_000
    assert flow.self_consumption == pytest.approx(5 / 11)


def test_no_solar_and_no_use_give_no_ratios_rather_than_a_division_by_zero():
    flow = energy_flow(_usage([{"meter": 0.0, "appliance": 0.0}]))
    assert flow.self_consumption is None and flow.self_sufficiency is None


_wh = st.floats(min_value=-5000, max_value=5000, allow_nan=False).map(lambda v: round(v, 4))
_minute = st.fixed_dictionaries({"meter": _wh, "pv": _wh.map(lambda v: -abs(v)), "battery": _wh,
                                 "ev": _wh.map(abs), "appliance": _wh.map(abs)})


@settings(max_examples=300, deadline=None)
@given(st.lists(_minute, min_size=1, max_size=40), st.booleans())
def test_sources_equal_sinks_exactly_for_any_minutes(minutes, with_meter):
    if not with_meter:
        minutes = [{k: v for k, v in m.items() if k != "meter"} for m in minutes]
    flow = energy_flow(_usage(minutes))
    _balanced(flow)
    assert flow.buckets + flow.left_out_buckets == len(minutes)
    for ratio in (flow.self_consumption, flow.self_sufficiency):
        assert ratio is None or 0 <= ratio <= 1


def test_a_simulated_pv_day_balances_and_its_solar_matches_the_pv_readings():
    home = next(h for h in (SimulatedHome(f"h{i}", i) for i in range(40)) if h.pv_kw and h.has_battery)
    readings = simulated_day(home, datetime(2024, 6, 21, tzinfo=timezone.utc))
    usage = pl.DataFrame({"bucket": [r.ts for r in readings], "kind": [r.kind.value for r in readings],
                          "energy_wh": [r.power_w / 60 for r in readings]},
                         schema={"bucket": pl.Datetime("us", "UTC"), "kind": pl.Utf8, "energy_wh": pl.Float64})
    flow = energy_flow(usage)
    _balanced(flow)
    assert flow.left_out_buckets == 0  # the simulator's meter is the exact sum of its devices
    pv_wh = -sum(r.power_w for r in readings if r.device_id == "pv") / 60
    assert abs(flow.sources[SOLAR] / 1000 - pv_wh) < 1  # to a watt-hour over the day (mWh rounding)
    assert flow.sinks[BATTERY] > 0 and flow.sources[BATTERY] > 0
    assert 0 < flow.self_consumption < 1 and 0 < flow.self_sufficiency < 1
