"""Battery and EV command kinds, the switchboard obeying them, and a plan turned into timed
commands (pure parts of carrying plans out)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.energy.device_control import BatteryModel, SetCommand, SwitchBoard, UnsupportedCommand, vendor_message
from pipeline.energy.optimize import Battery, DeferrableLoad, EvCharge, PlanProblem, optimize
from pipeline.energy.plan_commands import (
    PlannedCommand,
    battery_soc_after,
    energy_kwh,
    followed,
    plan_commands,
    problem_from_json,
    problem_to_json,
    remaining_problem,
)
from pipeline.ingest.decode.common import DecodeError
from pipeline.records import AckStatus, CommandState, DeviceInfo, DeviceKind, Source

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
SLOT = timedelta(minutes=15)


def test_old_switch_payloads_are_unchanged_and_new_kinds_round_trip():
    assert json.loads(SetCommand("c-1", CommandState.OFF).payload()) == {"command_id": "c-1", "state": "off"}
    battery = SetCommand("c-2", CommandState.ON, None, battery_w=-2500.0)
    assert json.loads(battery.payload()) == {"command_id": "c-2", "state": "on", "battery_w": -2500.0}
    assert SetCommand.parse(battery.payload(), T0) == battery and battery.kind == "battery"
    ev = SetCommand("c-3", CommandState.ON, T0, limit_w=3700.0)
    assert SetCommand.parse(ev.payload(), T0) == ev and ev.kind == "ev_limit"
    with pytest.raises(DecodeError, match="not both"):
        SetCommand.parse(b'{"command_id":"c","state":"on","battery_w":1,"limit_w":2}', T0)
    with pytest.raises(DecodeError, match="limit_w must not be negative"):
        SetCommand.parse(b'{"command_id":"c","state":"on","limit_w":-5}', T0)
    for bad in (b'"1e9"', b"true", b"1e9"):
        with pytest.raises(DecodeError, match="battery_w must be a number of W"):
            SetCommand.parse(b'{"command_id":"c","state":"on","battery_w":' + bad + b"}", T0)


def test_vendor_topics_carry_switches_and_only_native_devices_take_setpoints():
    off, setpoint = SetCommand("c", CommandState.OFF), SetCommand("c", CommandState.ON, battery_w=1000.0)
    native = DeviceInfo("h", "battery", DeviceKind.BATTERY, Source.NATIVE)
    assert vendor_message(native, setpoint, "pfx/") == ("pfx/shems/h/battery/set", setpoint.payload())
    shelly = DeviceInfo("h", "washer", DeviceKind.APPLIANCE, Source.SHELLY, vendor_id="shellyplus1pm-ab", channel=0)
    topic, payload = vendor_message(shelly, off)
    assert topic == "shellyplus1pm-ab/rpc"
    assert json.loads(payload)["method"] == "Switch.Set" and json.loads(payload)["params"] == {"id": 0, "on": False}
    tasmota = DeviceInfo("h", "heater", DeviceKind.APPLIANCE, Source.TASMOTA, vendor_id="plug1", channel=1)
    assert vendor_message(tasmota, off) == ("cmnd/plug1/POWER2", b"OFF")
    z2m = DeviceInfo("h", "lamp", DeviceKind.APPLIANCE, Source.ZIGBEE2MQTT, vendor_id="lamp 1")
    assert vendor_message(z2m, off) == ("zigbee2mqtt/lamp 1/set", b'{"state": "OFF"}')
    with pytest.raises(UnsupportedCommand, match="cannot take a battery command"):
        vendor_message(DeviceInfo("h", "battery", DeviceKind.BATTERY, Source.SHELLY, vendor_id="x"), setpoint)


def test_a_battery_draws_its_setpoint_within_its_limits_and_tracks_its_charge():
    key = ("h", "battery")
    board = SwitchBoard({key: DeviceKind.BATTERY, ("h", "fridge"): DeviceKind.APPLIANCE},
                        batteries={key: BatteryModel(1.0, 2000.0, 1000.0, efficiency=1.0, soc_kwh=0.5)})
    board.due(T0)
    assert board.power("h", "battery", 0.0) == 0.0  # idle until told
    ack = board.command("h", "battery", SetCommand("c-1", CommandState.ON, battery_w=5000.0), T0)
    assert ack.status is AckStatus.APPLIED and ack.message == "battery +5,000 W"
    assert board.power("h", "battery", 0.0) == 2000.0  # the charge limit
    board.due(T0 + timedelta(minutes=6))  # 0.2 kWh in
    assert board.batteries[key].soc_kwh == pytest.approx(0.7)
    board.due(T0 + timedelta(minutes=30))  # full: it stops drawing
    assert board.batteries[key].soc_kwh == pytest.approx(1.0) and board.power("h", "battery", 0.0) == 0.0
    board.command("h", "battery", SetCommand("c-2", CommandState.ON, battery_w=-3000.0), T0 + timedelta(minutes=30))
    assert board.power("h", "battery", 0.0) == -1000.0  # the discharge limit
    refused = board.command("h", "fridge", SetCommand("c-3", CommandState.ON, battery_w=100.0), T0)
    assert refused.status is AckStatus.REJECTED and "takes no battery setpoint" in refused.message


def test_an_ev_draws_at_most_its_limit_and_a_stuck_battery_ignores_setpoints():
    board = SwitchBoard({("h", "ev"): DeviceKind.EV, ("h", "battery"): DeviceKind.BATTERY},
                        stuck=frozenset({("h", "battery")}),
                        batteries={("h", "battery"): BatteryModel(1.0, 2000.0, 2000.0, soc_kwh=0.5)})
    board.command("h", "ev", SetCommand("c-1", CommandState.ON, limit_w=3700.0), T0)
    assert board.power("h", "ev", 7200.0) == 3700.0 and board.power("h", "ev", 1000.0) == 1000.0
    assert board.command("h", "battery", SetCommand("c-2", CommandState.ON, battery_w=2000.0), T0).status \
        is AckStatus.APPLIED
    board.due(T0 + timedelta(minutes=30))
    assert board.power("h", "battery", 0.0) == 0.0 and board.batteries[("h", "battery")].soc_kwh == 0.5


def _problem() -> PlanProblem:
    prices = (0.30,) * 8 + (0.10,) * 8 + (0.40,) * 8  # 6 h of 15-minute slots
    return PlanProblem(T0, SLOT, prices, (400.0,) * 24,
                       (DeferrableLoad("dishwasher", 1800.0, timedelta(minutes=30), T0, T0 + timedelta(hours=6)),),
                       (0.05,) * 24, None, "GBP", "UTC", None,
                       Battery(4.0, 2000.0, 2000.0, 0.9, 2.0),
                       EvCharge(3.0, 7200.0, T0, T0 + timedelta(hours=6)))


def test_a_plan_becomes_timed_commands_per_device():
    problem = _problem()
    plan = optimize(problem)
    commands = plan_commands(plan, problem, "battery", "ev")
    assert commands == sorted(commands, key=lambda c: (c.run_at, c.device_id))
    dish = [c for c in commands if c.device_id == "dishwasher"]
    (scheduled,) = plan.loads
    assert scheduled.start >= T0 + timedelta(hours=2)  # the cheap middle of the day
    assert [(c.run_at, c.state) for c in dish] == [(T0, CommandState.OFF), (scheduled.start, CommandState.ON),
                                                   (scheduled.end, CommandState.OFF)]
    end = problem.slot_start(problem.slots)
    # At the end the battery goes idle and the charger is released.
    assert [(c.device_id, c.value_w) for c in commands if c.run_at == end] == [("battery", 0.0), ("ev", 7200.0)]
    battery = [c for c in commands if c.device_id == "battery" and c.run_at < end]
    # One setpoint per change, each what the schedule says for its slots.
    by_slot = {s.start: s.battery_w for s in plan.schedule}
    for c in battery:
        assert c.kind == "battery" and c.value_w == pytest.approx(by_slot[c.run_at], abs=1.0)
        t = c.run_at
        while t < c.until:
            assert by_slot[t] == pytest.approx(c.value_w, abs=1.0)
            t += SLOT
    assert len(battery) < problem.slots and any(c.value_w and c.value_w < 0 for c in battery)
    ev = [c for c in commands if c.device_id == "ev" and c.run_at < end]
    delivered = sum((c.until - c.run_at) / timedelta(hours=1) * (c.value_w or 0.0) for c in ev) / 1000
    assert delivered == pytest.approx(3.0, rel=1e-3)


def test_followed_judges_setpoints_with_a_tolerance_and_switches_by_threshold():
    setpoint = PlannedCommand("battery", T0, T0 + SLOT, "battery", CommandState.ON, -2000.0, -2000.0)
    assert followed(setpoint, -1650.0) and not followed(setpoint, -1500.0) and not followed(setpoint, 0.0)
    small = PlannedCommand("battery", T0, T0 + SLOT, "battery", CommandState.ON, 500.0, 500.0)
    assert followed(small, 250.0) and not followed(small, 0.0 - 1.0)
    on = PlannedCommand("washer", T0, T0 + SLOT, "switch", CommandState.ON, None, 2000.0)
    off = PlannedCommand("washer", T0, T0 + SLOT, "switch", CommandState.OFF, None, 0.0)
    assert followed(on, 150.0) and not followed(on, 2.0) and followed(off, 0.5) and not followed(off, 1200.0)
    charge = PlannedCommand("ev", T0, T0 + SLOT, "ev_limit", CommandState.ON, 3700.0, 3700.0)
    assert followed(charge, 3600.0) and not followed(charge, 1000.0) and not followed(charge, 7200.0)
    release = PlannedCommand("ev", T0, T0 + SLOT, "ev_limit", CommandState.ON, 7200.0, 0.0)
    assert followed(release, 0.0) and followed(release, 7200.0) and not followed(release, 11000.0)


def test_measured_energy_and_state_of_charge():
    samples = [(T0 + timedelta(minutes=m), 1000.0) for m in range(0, 30, 10)]
    assert energy_kwh(samples, T0, T0 + timedelta(minutes=30)) == pytest.approx(0.5)
    battery = Battery(4.0, 2000.0, 2000.0, 0.81, 2.0)
    assert battery_soc_after(battery, 1.0, 0.0) == pytest.approx(2.9)
    assert battery_soc_after(battery, 0.0, 0.9) == pytest.approx(1.0)


def test_the_rest_of_a_plan_without_a_device_that_did_not_follow():
    problem = _problem()
    assert problem_from_json(json.loads(json.dumps(problem_to_json(problem)))) == problem
    now = T0 + timedelta(hours=2, minutes=5)
    rest = remaining_problem(problem, now, drop=["battery"], fixed_w=150.0, ev_delivered_kwh=1.0)
    assert rest is not None and rest.start == T0 + timedelta(hours=2) and rest.slots == 16
    assert rest.battery is None and rest.ev is not None and rest.ev.energy_kwh == pytest.approx(2.0)
    assert rest.base_load_w == (550.0,) * 16 and rest.import_price == problem.import_price[8:]
    assert [x.name for x in rest.loads] == ["dishwasher"] and rest.loads[0].earliest == rest.start
    plan = optimize(rest)
    assert plan.cost <= plan.baseline_cost
    kept = remaining_problem(problem, now, started=["dishwasher"], battery_soc_kwh=1.0, ev_delivered_kwh=3.0)
    assert kept is not None and kept.loads == () and kept.ev is None
    assert kept.battery is not None and kept.battery.soc_kwh == 1.0 and kept.battery.target_end_kwh == 1.0
    assert remaining_problem(problem, now, drop=["battery", "dishwasher", "ev"]) is None
