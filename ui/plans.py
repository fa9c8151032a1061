"""Accepted plans and their commands in the store (``plans``, ``plan_commands``), shared by
``shems plan --accept``/``--propose``, the viewer's plan page and the executor (``shems execute``).

A proposed plan waits for the household's "Accept" (its commands are ``proposed``, never sent).
A command moves pending -> sent -> acknowledged -> confirmed or not_followed; a command a
re-plan replaced, or one overtaken by a later command to the same device before it was sent,
is superseded.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pipeline.energy.optimize import Plan, PlanProblem, PlanSlot
from pipeline.energy.plan_commands import PlannedCommand, mean_power, plan_commands, problem_from_json, problem_to_json
from pipeline.records import CommandState, DeviceInfo, DeviceKind, Source
from sinks.rows import from_us
from ui.db import Database


@dataclass(frozen=True, slots=True)
class SlotActual:
    """One slot of a plan: what it planned and what was measured (W means; None: no readings)."""

    start: datetime
    import_price: float
    export_price: float
    planned_grid_w: float
    measured_grid_w: float | None
    planned: dict[str, float]  # device -> planned W
    measured: dict[str, float | None]

    def cost(self, grid_w: float | None, slot: timedelta) -> float | None:
        if grid_w is None:
            return None
        kwh = grid_w * slot.total_seconds() / 3600.0 / 1000.0
        return kwh * (self.import_price if kwh > 0 else self.export_price)


FINAL = ("confirmed", "not_followed", "superseded")


@dataclass(frozen=True, slots=True)
class StoredCommand:
    command_id: str
    plan_id: str
    home_id: str
    command: PlannedCommand
    status: str
    sent_at: datetime | None
    acked_at: datetime | None
    measured_w: float | None
    message: str


@dataclass(frozen=True, slots=True)
class StoredPlan:
    plan_id: str
    home_id: str
    status: str
    replaces: str | None
    accepted_by: str
    accepted_at: datetime
    cost: float
    baseline_cost: float
    currency: str
    battery_device: str | None
    ev_device: str | None
    problem: PlanProblem
    schedule: tuple[PlanSlot, ...]
    scope: tuple[str, ...] | None = None  # a plan for these devices only; None: the whole home


def slot_json(x: PlanSlot) -> dict:
    return {"start": x.start.isoformat(), "import_price": x.import_price, "export_price": x.export_price,
            "base_w": round(x.base_w, 3), "pv_w": round(x.pv_w, 3), "loads_w": round(x.loads_w, 3),
            "battery_w": round(x.battery_w, 3),
            "soc_kwh": None if x.soc_kwh is None else round(x.soc_kwh, 4),
            "ev_w": round(x.ev_w, 3), "grid_w": round(x.grid_w, 3)}


def _slot(d: dict) -> PlanSlot:
    return PlanSlot(datetime.fromisoformat(d["start"]), d["import_price"], d["export_price"], d["base_w"],
                    d["pv_w"], d["loads_w"], d["battery_w"], d["soc_kwh"], d["ev_w"], d["grid_w"])


def _scope(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(json.loads(text))


def _overlap(new: frozenset[str] | None, old: frozenset[str] | None,
             commanded: set[str]) -> tuple[set[str] | None, bool]:
    """What a newly accepted plan takes over from an active one: the devices whose pending
    commands it supersedes (None: all) and whether the old plan is replaced as a whole. A plan
    for the whole home replaces another for the whole home, and of a device plan the devices it
    commands itself; a device plan takes its devices from any plan and replaces a device plan it
    covers."""
    if new is None:
        if old is None:
            return None, True
        touched = set(old) & commanded
        return touched, touched == set(old)
    return set(new), old is not None and old <= new


class PlanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def accept(self, home_id: str, problem: PlanProblem, plan: Plan, by: str, *,
               battery_device: str | None = "battery", ev_device: str | None = "ev",
               replaces: str | None = None, now: datetime | None = None,
               keep: frozenset[str] = frozenset(), scope: frozenset[str] | None = None) -> str:
        """Store an accepted plan and the commands that carry it out; returns its id. A plan
        accepted for a home replaces the home's active one from its start on, except for the
        old plan's commands to the devices in ``keep`` (loads already running on it). A plan
        with a ``scope`` (devices) replaces other plans for those devices only."""
        plan_id = self.propose(home_id, problem, plan, by, battery_device=battery_device,
                               ev_device=ev_device, replaces=replaces, now=now, scope=scope)
        self.activate(plan_id, by, now=now, keep=keep)
        return plan_id

    def propose(self, home_id: str, problem: PlanProblem, plan: Plan, by: str, *,
                battery_device: str | None = "battery", ev_device: str | None = "ev",
                replaces: str | None = None, now: datetime | None = None,
                scope: frozenset[str] | None = None) -> str:
        """Store a plan for the household to accept (the viewer's plan page); nothing is sent."""
        now = now or datetime.now(timezone.utc)
        plan_id = f"p-{secrets.token_hex(6)}"
        commands = plan_commands(plan, problem, battery_device, ev_device)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO plans (plan_id, home_id, status, replaces, accepted_by, accepted_at, start_at, "
                "end_at, slot_s, cost, baseline_cost, currency, battery_device, ev_device, problem, schedule, "
                "scope) VALUES (:p, :h, 'proposed', :r, :by, :now, :s, :e, :slot, :c, :bc, :cur, :bd, :ed, "
                ":prob, :sch, :scope)",
                {"p": plan_id, "h": home_id, "r": replaces, "by": by, "now": now, "s": problem.start,
                 "e": problem.slot_start(problem.slots), "slot": problem.slot.total_seconds(),
                 "c": plan.cost, "bc": plan.baseline_cost, "cur": plan.currency,
                 "bd": battery_device if problem.battery else None, "ed": ev_device if problem.ev else None,
                 "prob": json.dumps(problem_to_json(problem)),
                 "sch": json.dumps([slot_json(x) for x in plan.schedule]),
                 "scope": None if scope is None else json.dumps(sorted(scope))})
            for c in commands:
                tx.execute(
                    "INSERT INTO plan_commands (command_id, plan_id, home_id, device_id, run_at, until_at, "
                    "kind, state, value_w, expect_w, status) VALUES (:id, :p, :h, :d, :at, :until, :k, :s, "
                    ":v, :x, 'proposed')",
                    {"id": f"c-{secrets.token_hex(8)}", "p": plan_id, "h": home_id, "d": c.device_id,
                     "at": c.run_at, "until": c.until, "k": c.kind, "s": c.state.value, "v": c.value_w,
                     "x": c.expect_w})
        return plan_id

    def activate(self, plan_id: str, by: str, *, now: datetime | None = None,
                 keep: frozenset[str] = frozenset()) -> bool:
        """Accept a proposed plan: its commands become due at their times and it replaces the
        home's active plan (see ``accept``). False when it is not a proposal (any more)."""
        now = now or datetime.now(timezone.utc)
        with self.db.transaction() as tx:
            rows = tx.rows(f"SELECT home_id, {self.db.us('start_at')}, scope FROM plans "
                           "WHERE plan_id = :p AND status = 'proposed'", {"p": plan_id})
            if not rows:
                return False
            home_id, start, scope = rows[0][0], from_us(int(rows[0][1])), _scope(rows[0][2])
            commanded = {d for (d,) in tx.rows("SELECT DISTINCT device_id FROM plan_commands WHERE plan_id = :p",
                                                {"p": plan_id})}
            for old, old_json in tx.rows("SELECT plan_id, scope FROM plans WHERE home_id = :h "
                                         "AND status = 'active'", {"h": home_id}):
                touched, replaced = _overlap(scope, _scope(old_json), commanded)
                for cid, device in tx.rows("SELECT command_id, device_id FROM plan_commands WHERE "
                                           "plan_id = :p AND status = 'pending' AND run_at >= :t",
                                           {"p": old, "t": start}):
                    if device not in keep and (touched is None or device in touched):
                        tx.execute("UPDATE plan_commands SET status = 'superseded', message = :m "
                                   "WHERE command_id = :c", {"c": cid, "m": f"replaced by {plan_id}"})
                if replaced:
                    tx.execute("UPDATE plans SET status = 'replaced' WHERE plan_id = :p", {"p": old})
            tx.execute("UPDATE plans SET status = 'active', accepted_by = :by, accepted_at = :now "
                       "WHERE plan_id = :p", {"p": plan_id, "by": by, "now": now})
            tx.execute("UPDATE plan_commands SET status = 'pending' WHERE plan_id = :p AND status = 'proposed'",
                       {"p": plan_id})
        return True

    # ------------------------------------------------------------------ reading
    def plan(self, plan_id: str) -> StoredPlan | None:
        us = self.db.us
        rows = self.db.rows(
            f"SELECT plan_id, home_id, status, replaces, accepted_by, {us('accepted_at')}, cost, "
            "baseline_cost, currency, battery_device, ev_device, problem, schedule, scope FROM plans "
            "WHERE plan_id = :p", {"p": plan_id})
        if not rows:
            return None
        p, h, status, replaces, by, at, cost, bcost, cur, bd, ed, prob, sch, scope = rows[0]
        found = _scope(scope)
        return StoredPlan(p, h, status, replaces, by, from_us(int(at)), float(cost), float(bcost), cur, bd, ed,
                          problem_from_json(json.loads(prob)), tuple(_slot(d) for d in json.loads(sch)),
                          None if found is None else tuple(sorted(found)))

    def plans(self, home_id: str | None = None, status: str | None = None) -> list[str]:
        where = " AND ".join(["1 = 1"] + (["home_id = :h"] if home_id is not None else [])
                             + (["status = :s"] if status is not None else []))
        rows = self.db.rows(f"SELECT plan_id FROM plans WHERE {where} ORDER BY accepted_at",
                            {k: v for k, v in (("h", home_id), ("s", status)) if v is not None})
        return [p for (p,) in rows]

    def commands(self, plan_id: str | None = None, statuses: tuple[str, ...] = (),
                 due_by: datetime | None = None) -> list[StoredCommand]:
        us = self.db.us
        where: list[str] = ["1 = 1"]
        params: dict[str, object] = {}
        if plan_id is not None:
            where.append("plan_id = :p")
            params["p"] = plan_id
        if statuses:
            where.append("status IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")")
            params.update({f"s{i}": s for i, s in enumerate(statuses)})
        if due_by is not None:
            where.append("run_at <= :due")
            params["due"] = due_by
        rows = self.db.rows(
            f"SELECT command_id, plan_id, home_id, device_id, {us('run_at')}, {us('until_at')}, kind, state, "
            f"value_w, expect_w, status, {us('sent_at')}, {us('acked_at')}, measured_w, message "
            f"FROM plan_commands WHERE {' AND '.join(where)} ORDER BY run_at, device_id", params)
        return [StoredCommand(cid, pid, h, PlannedCommand(d, from_us(int(at)), from_us(int(until)), kind,
                                                          CommandState(state), value, float(expect)),
                              status, from_us(sent), from_us(acked), measured, msg)
                for (cid, pid, h, d, at, until, kind, state, value, expect, status, sent, acked, measured,
                     msg) in rows]

    def set_status(self, command_id: str, status: str, *, sent_at: datetime | None = None,
                   acked_at: datetime | None = None, checked_at: datetime | None = None,
                   measured_w: float | None = None, message: str | None = None) -> None:
        self.db.execute(
            "UPDATE plan_commands SET status = :s, sent_at = coalesce(:sent, sent_at), "
            "acked_at = coalesce(:acked, acked_at), checked_at = coalesce(:checked, checked_at), "
            "measured_w = coalesce(:w, measured_w), message = coalesce(:m, message) WHERE command_id = :c",
            {"c": command_id, "s": status, "sent": sent_at, "acked": acked_at, "checked": checked_at,
             "w": measured_w, "m": message})

    def set_plan_status(self, plan_id: str, status: str) -> None:
        self.db.execute("UPDATE plans SET status = :s WHERE plan_id = :p", {"p": plan_id, "s": status})

    def supersede(self, plan_id: str, devices: set[str], since: datetime, why: str) -> None:
        """The plan's pending commands to ``devices`` from ``since`` on will not be sent."""
        for device in sorted(devices):
            self.db.execute("UPDATE plan_commands SET status = 'superseded', message = :m "
                            "WHERE plan_id = :p AND device_id = :d AND status = 'pending' AND run_at >= :t",
                            {"p": plan_id, "d": device, "t": since, "m": why})

    def ack(self, command_id: str) -> tuple[str, datetime, str] | None:
        """The device's answer: rejected wins over applied; None while it has not answered."""
        rows = self.db.rows(f"SELECT status, {self.db.us('ts')}, message FROM command_acks "
                            "WHERE command_id = :c AND status IN ('applied', 'rejected')", {"c": command_id})
        if not rows:
            return None
        status, ts, message = sorted(rows, key=lambda r: r[0] != "rejected")[0]
        return status, from_us(int(ts)), message

    def samples(self, home_id: str, device_id: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        rows = self.db.rows(f"SELECT {self.db.us('ts')}, power_w FROM readings WHERE home_id = :h "
                            "AND device_id = :d AND ts >= :s AND ts < :e ORDER BY ts",
                            {"h": home_id, "d": device_id, "s": start, "e": end})
        return [(from_us(int(t)), float(w)) for t, w in rows]

    def device(self, home_id: str, device_id: str) -> DeviceInfo | None:
        rows = self.db.rows("SELECT kind, source, vendor_id, channel FROM devices "
                            "WHERE home_id = :h AND device_id = :d", {"h": home_id, "d": device_id})
        if not rows:
            return None
        kind, source, vendor_id, channel = rows[0]
        return DeviceInfo(home_id, device_id, DeviceKind(kind), Source(source), vendor_id=vendor_id,
                          channel=channel)

    def meter(self, home_id: str) -> str | None:
        rows = self.db.rows("SELECT device_id FROM devices WHERE home_id = :h AND kind = 'meter' "
                            "ORDER BY device_id LIMIT 1", {"h": home_id})
        return rows[0][0] if rows else None

    def record_sent(self, cmd: StoredCommand, at: datetime) -> None:
        """The command as the viewer's control page lists it (``device_commands``), beside the
        homeowner's own, and its plan's status."""
        self.db.execute("INSERT INTO device_commands (command_id, home_id, device_id, state, run_at, "
                        "issued_by, issued_at) VALUES (:c, :h, :d, :s, NULL, :by, :at) "
                        "ON CONFLICT (command_id) DO NOTHING",
                        {"c": cmd.command_id, "h": cmd.home_id, "d": cmd.command.device_id,
                         "s": cmd.command.state.value, "by": f"plan {cmd.plan_id}", "at": at})
        self.set_status(cmd.command_id, "sent", sent_at=at)


def planned_vs_actual(store: PlanStore, plan_id: str) -> list[SlotActual]:
    """Per slot of a plan: planned and measured power of its devices and of the home's meter."""
    stored = store.plan(plan_id)
    if stored is None:
        raise ValueError(f"no plan {plan_id!r}")
    p = stored.problem
    meter = store.meter(stored.home_id)
    # A load's planned power in a slot: its power where its relay is planned on.
    load_on: dict[str, set[datetime]] = {load.name: set() for load in p.loads}
    for cmd in store.commands(plan_id):
        c = cmd.command
        if c.device_id in load_on and c.state is CommandState.ON:
            t = c.run_at
            while t < c.until:
                load_on[c.device_id].add(t)
                t += p.slot
    power = {load.name: load.power_w for load in p.loads}
    out = []
    for planned in stored.schedule:
        end = planned.start + p.slot
        by_device = {d: (power[d] if planned.start in on else 0.0) for d, on in load_on.items()}
        if stored.battery_device:
            by_device[stored.battery_device] = planned.battery_w
        if stored.ev_device:
            by_device[stored.ev_device] = planned.ev_w
        measured = {d: mean_power(store.samples(stored.home_id, d, planned.start, end)) for d in by_device}
        grid = mean_power(store.samples(stored.home_id, meter, planned.start, end)) if meter else None
        out.append(SlotActual(planned.start, planned.import_price, planned.export_price, planned.grid_w,
                              grid, by_device, measured))
    return out
