"""A device's next run as an accepted plan, from the viewer: an accepted load-shift
recommendation (on at the recommended start, off after the run) and "cheapest before HH:MM" (the
run in the cheapest window before the deadline under the home's tariff). Both are stored as
accepted plans for that device only (``PlanStore.accept(scope=...)``), so ``shems execute``
sends their commands at the planned times and a battery plan of the home carries on beside them.

The run's length and power are the device's own: its typical run over the last ``HISTORY``
(``pipeline.energy.device_plan.typical_run``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

import numpy as np

from pipeline.energy.device_control import SWITCHABLE_KINDS
from pipeline.energy.device_plan import TypicalRun, cheapest_before, recommended_start, run_at, typical_run
from pipeline.energy.optimize import Plan, PlanError, PlanProblem
from pipeline.energy.tariff import price_frame
from pipeline.records import DeviceKind
from sinks.rows import from_us
from ui.accounts import Accounts
from ui.auth import Principal, require_owner
from ui.cost import Pricing
from ui.db import Database
from ui.plans import PlanStore, StoredCommand

HISTORY = timedelta(days=28)


class PlanRefused(ValueError):
    """A device plan that cannot be made, in one sentence for the page."""


@dataclass(frozen=True, slots=True)
class DevicePlan:
    plan_id: str
    run: TypicalRun
    cost: float
    baseline_cost: float
    currency: str
    commands: list[StoredCommand]

    def on_at(self) -> datetime:
        return next(c.command.run_at for c in self.commands if c.command.state.value == "on")

    def off_at(self) -> datetime:
        return next(c.command.until for c in self.commands if c.command.state.value == "on")


def _prices(pricing: Pricing, home_id: str):
    """Per-slot prices from the home's tariff in the store; the flat price where it has none."""

    def prices(start: datetime, end: datetime, slot: timedelta):
        n = round((end - start) / slot)
        flat = (pricing.flat_price_per_kwh,) * n
        if pricing.book is None:
            return flat, (0.0,) * n
        try:
            frame = price_frame(pricing.book, home_id, start, end, slot)
        except ValueError:  # no tariff for this home at these times
            return flat, (0.0,) * n
        imp = frame["import_price"].to_numpy().astype(float)
        exp = frame["export_price"].fill_null(0.0).to_numpy().astype(float)
        imp = np.where(np.isnan(imp), pricing.flat_price_per_kwh, imp)
        return tuple(imp.tolist()), tuple(np.nan_to_num(exp).tolist())

    return prices


def device_run(db: Database, home_id: str, device_id: str, now: datetime) -> TypicalRun | None:
    rows = db.rows(f"SELECT {db.us('bucket')}, mean_power_w FROM device_1m WHERE home_id = :h "
                   "AND device_id = :d AND bucket >= :since AND bucket < :now ORDER BY bucket",
                   {"h": home_id, "d": device_id, "since": now - HISTORY, "now": now})
    return typical_run([from_us(int(t)) for t, _ in rows], [float(w) for _, w in rows])


def _switchable(db: Database, home_id: str, device_id: str) -> None:
    rows = db.rows("SELECT kind FROM devices WHERE home_id = :h AND device_id = :d",
                   {"h": home_id, "d": device_id})
    if not rows:
        raise PlanRefused(f"{home_id} has no device {device_id!r}.")
    if DeviceKind(rows[0][0]) not in SWITCHABLE_KINDS:
        raise PlanRefused(f"{device_id} is a {rows[0][0]}: shems does not switch it.")


def _store(db: Database, accounts: Accounts, principal: Principal, home_id: str, device_id: str,
           run: TypicalRun, problem: PlanProblem, plan: Plan, action: str, now: datetime) -> DevicePlan:
    store = PlanStore(db)
    plan_id = store.accept(home_id, problem, plan, principal.username, battery_device=None, ev_device=None,
                           now=now, scope=frozenset({device_id}))
    accounts.audit(principal.username, action, home_id, device_id, plan_id)
    return DevicePlan(plan_id, run, plan.cost, plan.baseline_cost, plan.currency, store.commands(plan_id))


def _run_of(db: Database, home_id: str, device_id: str, now: datetime) -> TypicalRun:
    run = device_run(db, home_id, device_id, now)
    if run is None:
        raise PlanRefused(f"{device_id} has not run in the last {HISTORY.days} days: shems does not "
                          "know how long its run takes.")
    return run


def plan_cheapest_before(db: Database, accounts: Accounts, pricing: Pricing, principal: Principal,
                         home_id: str, device_id: str, before: time, tz: str, now: datetime) -> DevicePlan:
    """The device's next run in the cheapest window before the next local ``before``, accepted."""
    require_owner(principal, home_id)
    _switchable(db, home_id, device_id)
    run = _run_of(db, home_id, device_id, now)
    try:
        problem, plan = cheapest_before(device_id, run, now, before, tz, _prices(pricing, home_id),
                                        pricing.currency)
    except PlanError as exc:
        raise PlanRefused(str(exc)) from exc
    return _store(db, accounts, principal, home_id, device_id, run, problem, plan,
                  "plan_cheapest_before", now)


def plan_recommendation(db: Database, accounts: Accounts, pricing: Pricing, principal: Principal,
                        home_id: str, device_id: str, title: str, tz: str, now: datetime) -> DevicePlan:
    """An accepted load-shift recommendation as the device's next run at its recommended start."""
    require_owner(principal, home_id)
    _switchable(db, home_id, device_id)
    at = recommended_start(title)
    if at is None:
        raise PlanRefused("This recommendation names no start time to plan.")
    run = _run_of(db, home_id, device_id, now)
    try:
        problem, plan = run_at(device_id, run, now, at, tz, _prices(pricing, home_id), pricing.currency)
    except PlanError as exc:
        raise PlanRefused(str(exc)) from exc
    return _store(db, accounts, principal, home_id, device_id, run, problem, plan,
                  "plan_recommendation", now)
