"""``shems execute``: carries accepted plans out, a process of its own beside the flow.

Each poll:

1. sends every pending command whose time has come (QoS 1) through the device's own topics
   (``pipeline.energy.device_control.vendor_message``); of two due commands to one device only
   the later is sent, the earlier is superseded;
2. reads the device's answer from the store's ``command_acks`` (the flow stores acks like
   readings): applied -> acknowledged, rejected or silent past the ack timeout -> not followed.
   Vendor relays (Shelly, Tasmota, Zigbee2MQTT) do not answer: they count as acknowledged when
   sent and are judged by their power alone;
3. confirms each acknowledged command by the device's measured power once it has settled
   (``settle_s`` after the answer, averaged over ``window_s``, cut at the device's next command,
   judged ``store_delay_s`` later so that the window's readings are stored):
   the mean must be what the plan expects (``pipeline.energy.plan_commands.followed``);
4. when a device did not follow, plans the rest of the horizon again without it: its measured
   power joins the base load, the battery starts from its measured state of charge and the EV
   needs what it has not had yet (``remaining_problem``), and the new plan replaces the old one
   from the current slot on;
5. with a registry (``receding``), plans each home with a battery spec afresh every hour for the
   next 24 hours (``pipeline.tools.receding``).

Why a process and not a step of the flow: sending waits for the broker and judging waits for
minutes of readings; the flow stays pure and fast, and every decision here is re-derived from
the store, so the executor can be restarted at any time (a command is marked sent only after the
broker took it: a crash between the two sends it again, and the device treats a repeated
command_id as the same command).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pipeline.energy.device_control import UnsupportedCommand, vendor_message
from pipeline.energy.optimize import PlanError, optimize
from pipeline.energy.plan_commands import (
    Tolerance,
    battery_soc_after,
    energy_kwh,
    followed,
    mean_power,
    remaining_problem,
)
from pipeline.logs import get_logger, mask_secrets
from pipeline.records import CommandState, DeviceInfo, DeviceKind, Source
from pipeline.tools.receding import RecedingHorizon
from ui.db import Database
from ui.plans import PlanStore, StoredCommand

log = get_logger(__name__)

Send = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    topic_prefix: str = ""
    ack_timeout_s: float = 60.0
    settle_s: float = 60.0  # a battery ramps, a washing machine fills before it heats
    window_s: float = 120.0
    store_delay_s: float = 15.0  # readings reach the store this much after they were taken
    tolerance: Tolerance = field(default_factory=Tolerance)


@dataclass(frozen=True, slots=True)
class PollResult:
    sent: int = 0
    acknowledged: int = 0
    confirmed: int = 0
    not_followed: int = 0
    superseded: int = 0
    replanned: tuple[str, ...] = ()


class PlanExecutor:
    def __init__(self, db: Database, send: Send, settings: ExecutorSettings = ExecutorSettings(),
                 receding: RecedingHorizon | None = None) -> None:
        self.store = PlanStore(db)
        self.send = send
        self.settings = settings
        self.receding = receding

    def poll(self, now: datetime | None = None) -> PollResult:
        now = now or datetime.now(timezone.utc)
        sent, superseded, failed = self._send_due(now)
        acknowledged, late = self._read_acks(now)
        confirmed, wrong = self._confirm(now)
        failed += late + wrong
        replanned = []
        by_plan: dict[str, set[str]] = {}
        for cmd in failed:
            by_plan.setdefault(cmd.plan_id, set()).add(cmd.command.device_id)
        for plan_id, devices in by_plan.items():
            new = self._replan(plan_id, devices, now)
            if new:
                replanned.append(new)
        self._finish_plans(now)
        if self.receding is not None:
            replanned += self.receding.poll(now)
        result = PollResult(sent, acknowledged, confirmed, len(failed), superseded, tuple(replanned))
        if sent or acknowledged or confirmed or failed:
            log.info("execute_poll", sent=sent, acknowledged=acknowledged, confirmed=confirmed,
                     not_followed=len(failed), superseded=superseded, replanned=list(replanned))
        return result

    def run(self, interval_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - a store or broker outage: try again next poll
                log.warning("execute_poll_failed", error=mask_secrets(f"{type(exc).__name__}: {exc}"))
            stop.wait(interval_s)

    # ------------------------------------------------------------------ the steps
    def _send_due(self, now: datetime) -> tuple[int, int, list[StoredCommand]]:
        due = self.store.commands(statuses=("pending",), due_by=now)
        latest: dict[tuple[str, str], StoredCommand] = {}
        superseded = 0
        for cmd in due:  # in time order: a later one to the same device overtakes
            key = (cmd.home_id, cmd.command.device_id)
            if key in latest:
                self.store.set_status(latest[key].command_id, "superseded",
                                      message=f"overtaken by {cmd.command_id} before it was sent")
                superseded += 1
            latest[key] = cmd
        sent, failed = 0, []
        for cmd in latest.values():
            device = self.store.device(cmd.home_id, cmd.command.device_id) or DeviceInfo(
                cmd.home_id, cmd.command.device_id, DeviceKind.APPLIANCE, Source.NATIVE)
            try:
                topic, payload = vendor_message(device, cmd.command.set_command(cmd.command_id),
                                                self.settings.topic_prefix)
            except UnsupportedCommand as exc:
                self.store.set_status(cmd.command_id, "not_followed", checked_at=now, message=str(exc))
                failed.append(cmd)
                continue
            self.send(topic, payload)
            self.store.record_sent(cmd, now)
            if device.source is not Source.NATIVE:
                self.store.set_status(cmd.command_id, "acknowledged", acked_at=now,
                                      message=f"{device.source.value} relays do not answer; judged by power")
            sent += 1
        return sent, superseded, failed

    def _read_acks(self, now: datetime) -> tuple[int, list[StoredCommand]]:
        acknowledged, failed = 0, []
        for cmd in self.store.commands(statuses=("sent",)):
            answer = self.store.ack(cmd.command_id)
            if answer is None:
                assert cmd.sent_at is not None
                if (now - cmd.sent_at).total_seconds() > self.settings.ack_timeout_s:
                    self.store.set_status(cmd.command_id, "not_followed", checked_at=now,
                                          message=f"no answer within {self.settings.ack_timeout_s:g} s")
                    failed.append(cmd)
                continue
            status, ts, message = answer
            if status == "rejected":
                self.store.set_status(cmd.command_id, "not_followed", acked_at=ts, checked_at=now,
                                      message=f"refused: {message or 'no reason given'}")
                failed.append(cmd)
            else:
                self.store.set_status(cmd.command_id, "acknowledged", acked_at=ts)
                acknowledged += 1
        return acknowledged, failed

    def _confirm(self, now: datetime) -> tuple[int, list[StoredCommand]]:
        confirmed, failed = 0, []
        for cmd in self.store.commands(statuses=("acknowledged",)):
            start, end = self._window(cmd)
            if now < end + timedelta(seconds=self.settings.store_delay_s):
                continue
            c = cmd.command
            samples = self.store.samples(cmd.home_id, c.device_id, start, end)
            measured = mean_power(samples)
            if measured is not None and followed(c, measured, self.settings.tolerance):
                self.store.set_status(cmd.command_id, "confirmed", checked_at=now, measured_w=measured,
                                      message=f"drew {measured:,.0f} W")
                confirmed += 1
                continue
            if measured is None:
                why = f"no readings between {start:%H:%M:%S} and {end:%H:%M:%S} UTC"
            elif c.kind == "switch":
                why = (f"switched {c.state.value} but drew {measured:,.0f} W")
            else:
                why = f"drew {measured:,.0f} W where the plan expects {c.expect_w:,.0f} W"
            self.store.set_status(cmd.command_id, "not_followed", checked_at=now, measured_w=measured,
                                  message=why)
            failed.append(cmd)
        return confirmed, failed

    def _window(self, cmd: StoredCommand) -> tuple[datetime, datetime]:
        """Where a command's effect is measured: after it settles, until the next command."""
        assert cmd.acked_at is not None
        span = max(0.0, (cmd.command.until - cmd.acked_at).total_seconds())
        settle = min(self.settings.settle_s, span / 2)
        start = cmd.acked_at + timedelta(seconds=settle)
        end = min(start + timedelta(seconds=self.settings.window_s), max(cmd.command.until, start))
        return start, max(end, start + timedelta(seconds=1))

    def _replan(self, plan_id: str, devices: set[str], now: datetime) -> str | None:
        stored = self.store.plan(plan_id)
        why = f"{', '.join(sorted(devices))} did not follow the plan"
        self.store.supersede(plan_id, devices, now, why)
        if stored is None or stored.status != "active":
            return None
        problem = stored.problem
        home = stored.home_id
        measured: dict[str, float] = {}  # the newest measurement of each device that did not follow
        for cmd in self.store.commands(plan_id):
            if cmd.command.device_id in devices and cmd.measured_w is not None and cmd.status == "not_followed":
                measured[cmd.command.device_id] = cmd.measured_w
        fixed = sum(measured.values())
        soc = None
        if problem.battery is not None and stored.battery_device and stored.battery_device not in devices:
            samples = self.store.samples(home, stored.battery_device, problem.start, now)
            charged = energy_kwh([(t, max(w, 0.0)) for t, w in samples], problem.start, now)
            discharged = energy_kwh([(t, max(-w, 0.0)) for t, w in samples], problem.start, now)
            soc = battery_soc_after(problem.battery, charged, discharged)
        delivered = 0.0
        if problem.ev is not None and stored.ev_device:
            delivered = energy_kwh(self.store.samples(home, stored.ev_device, problem.start, now),
                                   problem.start, now)
        slot_start = problem.start + problem.slot * max(0, int((now - problem.start) / problem.slot))
        started = {cmd.command.device_id for cmd in self.store.commands(plan_id)
                   if cmd.command.kind == "switch" and cmd.command.state is CommandState.ON
                   and cmd.command.run_at < slot_start}
        rest = remaining_problem(problem, now, drop=sorted(devices), started=sorted(started), fixed_w=fixed,
                                 battery_soc_kwh=soc, ev_delivered_kwh=delivered,
                                 battery_device=stored.battery_device, ev_device=stored.ev_device)
        if rest is None:
            log.info("replan_nothing_left", plan=plan_id, devices=sorted(devices))
            return None
        try:
            plan = optimize(rest)
        except PlanError as exc:
            log.warning("replan_failed", plan=plan_id, error=str(exc))
            return None
        new_id = self.store.accept(home, rest, plan, f"re-plan of {plan_id}: {why}",
                                   battery_device=stored.battery_device, ev_device=stored.ev_device,
                                   replaces=plan_id, now=now, keep=frozenset(started),
                                   scope=None if stored.scope is None else frozenset(stored.scope))
        log.info("replanned", plan=plan_id, new_plan=new_id, devices=sorted(devices),
                 cost=round(plan.cost, 4), baseline_cost=round(plan.baseline_cost, 4))
        return new_id

    def _finish_plans(self, now: datetime) -> None:
        for plan_id in self.store.plans(status="active"):
            stored = self.store.plan(plan_id)
            if stored is None or stored.problem.slot_start(stored.problem.slots) > now:
                continue
            open_ = self.store.commands(plan_id, statuses=("pending", "sent", "acknowledged"))
            if not open_:
                self.store.set_plan_status(plan_id, "done")
