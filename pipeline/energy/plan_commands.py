"""Carrying a plan out: the timed commands a plan needs, how to judge whether a device followed
one, and the problem that is left when one did not (re-planning the rest of the horizon).

Pure: the executor (``pipeline.tools.plan_executor``) reads and writes the store, sends the
commands and passes what it measured.

* A deferrable load is held off from the plan's start (an appliance armed by its owner would
  otherwise start at once), switched on at its planned start and off when it is done; an
  interruptible one is switched on and off around each run of slots.
* A battery gets a setpoint (W, + charge / - discharge) at the start of every slot where the
  planned power changes; an EV charger a power limit the same way. At the horizon's end the
  battery is set idle and the charger released to its full power (else the last slot's
  command would hold until the next plan).
* A command is followed when the device's mean measured power after it settles is what the
  plan expects: a battery or EV within 20 % or 300 W of its planned power (an EV at most its
  limit, the same margin over); a load above
  ``on_threshold_w`` when switched on and at most ``off_threshold_w`` when switched off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pipeline.energy.device_control import SetCommand
from pipeline.energy.optimize import Battery, DeferrableLoad, EvCharge, Plan, PlanProblem
from pipeline.records import CommandState

# Powers below this are "idle" in a setpoint (solver noise is a few mW).
_IDLE_W = 1.0


@dataclass(frozen=True, slots=True)
class PlannedCommand:
    device_id: str
    run_at: datetime
    until: datetime  # when the device's next command (or the horizon's end) takes over
    kind: str  # switch, battery, ev_limit
    state: CommandState
    value_w: float | None  # the battery setpoint or EV limit
    expect_w: float  # what the device should draw meanwhile

    def set_command(self, command_id: str) -> SetCommand:
        return SetCommand(command_id, self.state, None,
                          self.value_w if self.kind == "battery" else None,
                          self.value_w if self.kind == "ev_limit" else None)


@dataclass(frozen=True, slots=True)
class Tolerance:
    relative: float = 0.2
    absolute_w: float = 300.0
    on_threshold_w: float = 20.0
    off_threshold_w: float = 10.0


def plan_commands(plan: Plan, problem: PlanProblem, battery_device: str | None = "battery",
                  ev_device: str | None = "ev") -> list[PlannedCommand]:
    """The commands that carry ``plan`` out, in time order; load names are their device ids."""
    end = problem.slot_start(problem.slots)
    out: list[PlannedCommand] = []
    powers = {load.name: load.power_w for load in problem.loads}
    for scheduled in plan.loads:
        runs = _runs(list(scheduled.slots), problem.slot)
        if len(runs) == 1:  # a non-interruptible load: on at its start, off when it is done
            runs = [(scheduled.start, scheduled.end)]
        switches: list[tuple[datetime, CommandState, float]] = []
        if runs[0][0] > problem.start:
            switches.append((problem.start, CommandState.OFF, 0.0))
        for on_at, off_at in runs:
            switches.append((on_at, CommandState.ON, powers[scheduled.name]))
            switches.append((off_at, CommandState.OFF, 0.0))
        for i, (at, state, expect) in enumerate(switches):
            until = switches[i + 1][0] if i + 1 < len(switches) else max(end, at)
            out.append(PlannedCommand(scheduled.name, at, until, "switch", state, None, expect))
    after = end + problem.slot  # a command at the end is judged over one more slot
    if problem.battery is not None and battery_device:
        out += _setpoints(battery_device, "battery", [(s.start, s.battery_w) for s in plan.schedule], end)
        if out[-1].value_w:
            out.append(PlannedCommand(battery_device, end, after, "battery", CommandState.ON, 0.0, 0.0))
    if problem.ev is not None and ev_device:
        out += _setpoints(ev_device, "ev_limit", [(s.start, s.ev_w) for s in plan.schedule], end)
        out.append(PlannedCommand(ev_device, end, after, "ev_limit", CommandState.ON, problem.ev.max_power_w, 0.0))
    return sorted(out, key=lambda c: (c.run_at, c.device_id))


def _runs(slots: list[datetime], slot: timedelta) -> list[tuple[datetime, datetime]]:
    runs: list[tuple[datetime, datetime]] = []
    for t in sorted(slots):
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + slot)
        else:
            runs.append((t, t + slot))
    return runs


def _setpoints(device: str, kind: str, per_slot: list[tuple[datetime, float]],
               end: datetime) -> list[PlannedCommand]:
    changes: list[tuple[datetime, float]] = []
    for start, w in per_slot:
        w = 0.0 if abs(w) < _IDLE_W else round(w, 1)
        if not changes or abs(changes[-1][1] - w) >= _IDLE_W:
            changes.append((start, w))
    return [PlannedCommand(device, at, changes[i + 1][0] if i + 1 < len(changes) else end, kind,
                           CommandState.ON, w, w)
            for i, (at, w) in enumerate(changes)]


def followed(command: PlannedCommand, measured_w: float, tol: Tolerance = Tolerance()) -> bool:
    """Whether a device's mean measured power after a command is what the plan expects."""
    if command.kind == "switch":
        if command.state is CommandState.ON:
            return measured_w > tol.on_threshold_w
        return measured_w <= tol.off_threshold_w
    if command.kind == "ev_limit":
        limit = command.value_w or 0.0
        if measured_w > limit + max(tol.relative * limit, tol.absolute_w):
            return False
        if command.expect_w <= 0:  # a release or a pause: anything under the limit
            return True
    return abs(measured_w - command.expect_w) <= max(tol.relative * abs(command.expect_w), tol.absolute_w)


def mean_power(samples: Sequence[tuple[datetime, float]]) -> float | None:
    return sum(w for _, w in samples) / len(samples) if samples else None


def energy_kwh(samples: Sequence[tuple[datetime, float]], start: datetime, end: datetime) -> float:
    """Energy between ``start`` and ``end`` from power samples, each held until the next (the
    first one back to ``start``)."""
    pts = sorted((t, w) for t, w in samples if start <= t < end)
    total = 0.0
    for i, (t, w) in enumerate(pts):
        t0 = start if i == 0 else t
        t1 = pts[i + 1][0] if i + 1 < len(pts) else end
        total += w * (t1 - t0).total_seconds() / 3600.0
    return total / 1000.0


def battery_soc_after(battery: Battery, charged_kwh: float, discharged_kwh: float) -> float:
    """State of charge after measured charging and discharging (kWh at the battery's terminals),
    with the plan's own model: the round-trip efficiency split evenly."""
    eta = math.sqrt(battery.efficiency)
    soc = battery.soc_kwh + charged_kwh * eta - discharged_kwh / eta
    return min(max(soc, battery.min_soc_kwh), battery.upper_kwh)


def remaining_problem(problem: PlanProblem, now: datetime, *, drop: Sequence[str] = (),
                      started: Sequence[str] = (), fixed_w: float = 0.0, battery_soc_kwh: float | None = None,
                      ev_delivered_kwh: float = 0.0, battery_device: str | None = "battery",
                      ev_device: str | None = "ev") -> PlanProblem | None:
    """What is left of ``problem`` from the slot holding ``now``: devices in ``drop`` (those that
    did not follow) are left out and ``fixed_w`` (what they were measured drawing) is taken as
    part of the base load; the battery starts from its measured state of charge, the EV needs
    what it has not had yet, and loads that have ``started`` are the old plan's. None when nothing
    is left to plan."""
    k = max(0, int((now - problem.start) / problem.slot))
    if k >= problem.slots:
        return None
    start = problem.slot_start(k)
    loads = tuple(replace(load, earliest=max(load.earliest, start)) for load in problem.loads
                  if load.name not in drop and load.name not in started)
    battery = problem.battery
    if battery is not None and (battery_device in drop or battery_device is None):
        battery = None
    elif battery is not None and battery_soc_kwh is not None:
        battery = replace(battery, soc_kwh=battery_soc_kwh,
                          end_soc_kwh=min(battery.target_end_kwh, max(battery_soc_kwh, battery.min_soc_kwh)))
    ev: EvCharge | None = problem.ev
    if ev is not None:
        left = ev.energy_kwh - ev_delivered_kwh
        if ev_device in drop or ev_device is None or left <= 1e-6 or ev.deadline <= start:
            ev = None
        else:
            ev = replace(ev, energy_kwh=left, earliest=max(ev.earliest, start))
    if not loads and battery is None and ev is None:
        return None
    base = tuple(w + fixed_w for w in problem.base_load_w[k:])
    return replace(problem, start=start, import_price=problem.import_price[k:], base_load_w=base,
                   loads=loads,
                   export_price=None if problem.export_price is None else problem.export_price[k:],
                   pv_w=None if problem.pv_w is None else problem.pv_w[k:], battery=battery, ev=ev)


# ---------------------------------------------------------------------- storing a problem

def problem_to_json(p: PlanProblem) -> dict:
    """Everything needed to plan again, as JSON (times ISO 8601)."""
    return {
        "start": p.start.isoformat(), "slot_s": p.slot.total_seconds(),
        "import_price": list(p.import_price), "base_load_w": list(p.base_load_w),
        "export_price": None if p.export_price is None else list(p.export_price),
        "power_limit_w": p.power_limit_w, "currency": p.currency, "display_tz": p.display_tz,
        "pv_w": None if p.pv_w is None else list(p.pv_w),
        "loads": [{"name": x.name, "power_w": x.power_w, "duration_s": x.duration.total_seconds(),
                   "earliest": x.earliest.isoformat(), "deadline": x.deadline.isoformat(),
                   "interruptible": x.interruptible, "profile_wh": list(x.profile_wh)} for x in p.loads],
        "battery": None if p.battery is None else {
            "capacity_kwh": p.battery.capacity_kwh, "charge_w": p.battery.charge_w,
            "discharge_w": p.battery.discharge_w, "efficiency": p.battery.efficiency,
            "soc_kwh": p.battery.soc_kwh, "min_soc_kwh": p.battery.min_soc_kwh,
            "max_soc_kwh": p.battery.max_soc_kwh, "end_soc_kwh": p.battery.end_soc_kwh},
        "ev": None if p.ev is None else {
            "energy_kwh": p.ev.energy_kwh, "max_power_w": p.ev.max_power_w,
            "earliest": p.ev.earliest.isoformat(), "deadline": p.ev.deadline.isoformat(),
            "min_power_w": p.ev.min_power_w},
    }


def problem_from_json(d: dict) -> PlanProblem:
    def ts(v: str) -> datetime:
        return datetime.fromisoformat(v)

    def floats(v: list | None) -> tuple[float, ...] | None:
        return None if v is None else tuple(float(x) for x in v)

    b, e = d.get("battery"), d.get("ev")
    return PlanProblem(
        ts(d["start"]), timedelta(seconds=d["slot_s"]), tuple(float(x) for x in d["import_price"]),
        tuple(float(x) for x in d["base_load_w"]),
        tuple(DeferrableLoad(x["name"], x["power_w"], timedelta(seconds=x["duration_s"]), ts(x["earliest"]),
                             ts(x["deadline"]), x["interruptible"], tuple(x["profile_wh"]))
              for x in d["loads"]),
        floats(d.get("export_price")), d.get("power_limit_w"), d.get("currency", ""),
        d.get("display_tz", "UTC"), floats(d.get("pv_w")),
        None if b is None else Battery(b["capacity_kwh"], b["charge_w"], b["discharge_w"], b["efficiency"],
                                       b["soc_kwh"], b["min_soc_kwh"], b["max_soc_kwh"], b["end_soc_kwh"]),
        None if e is None else EvCharge(e["energy_kwh"], e["max_power_w"], ts(e["earliest"]),
                                        ts(e["deadline"]), e["min_power_w"]))
