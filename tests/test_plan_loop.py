"""Plans carried out, end to end through the real Mosquitto, the real flow and PostgreSQL:

plan accepted -> ``shems execute`` sends battery setpoints at their times -> the simulated home's
battery obeys and acknowledges -> flow -> command_acks and readings -> executor confirms each
setpoint by measured power; the home's measured cost is below its twin's (same seed, same loads,
its battery left idle) over the plan.

And, with a SQLite store and readings written by the test: a battery that acknowledges but does
not move is caught, its remaining commands are dropped and the rest is planned again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.energy.device_control import BatteryModel
from pipeline.energy.optimize import Battery, EvCharge, PlanProblem, optimize
from pipeline.records import AckStatus, CommandAck, CommandState, DeviceKind, Reading
from pipeline.tools.plan_executor import ExecutorSettings, PlanExecutor, planned_vs_actual
from pipeline.tools.publisher import Publisher
from pipeline.tools.simulator import SimulatedHome, run_simulation
from sinks.base import Batch
from sinks.stores import open_store
from tests.flowproc import ROOT, FlowProcess
from ui.db import Database
from ui.plans import PlanStore

SLOT = timedelta(seconds=15)  # a compressed day: the optimiser takes any slot length
CAPACITY_KWH, POWER_W = 0.05, 1500.0


def _battery() -> BatteryModel:
    return BatteryModel(CAPACITY_KWH, POWER_W, POWER_W, efficiency=0.9, soc_kwh=CAPACITY_KWH / 2)


class SetSpy:
    """What goes out on the set topics (the wire format of the executor's commands)."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.publisher = Publisher(mqtt_url, client_id=f"spy-{uuid.uuid4().hex[:8]}")
        self.publisher.subscribe(f"{prefix}shems/+/+/set",
                                 lambda m: self.messages.append((m.topic, json.loads(m.payload))))


def _cost(readings: list[Reading], start: datetime, prices: list[tuple[float, float]]) -> float:
    """Grid cost from a meter's readings, each held until the next."""
    rows = sorted((r.ts, r.power_w) for r in readings)
    total = 0.0
    for (t, w), (t1, _) in zip(rows, rows[1:]):
        slot = int((t - start) / SLOT)
        if not 0 <= slot < len(prices):
            continue
        kwh = w * (t1 - t).total_seconds() / 3600 / 1000
        total += kwh * (prices[slot][0] if kwh > 0 else prices[slot][1])
    return total


def test_an_accepted_plan_runs_the_battery_and_costs_less_than_its_twin(pg_url, mqtt_url, topic_prefix):
    store = open_store(pg_url)
    store.migrate()
    flow = FlowProcess(mqtt_url, pg_url, topic_prefix, ["--flush-interval", "0.2"]).start()
    acting, twin = (SimulatedHome(h, 7, battery=_battery()) for h in ("loop-home", "twin-home"))
    stop = threading.Event()
    publisher = Publisher(mqtt_url, client_id=f"sim-{uuid.uuid4().hex[:8]}")
    simulator = threading.Thread(target=run_simulation, daemon=True, kwargs=dict(
        publisher=publisher, homes=0, interval_s=1.0, duration_s=None, topic_prefix=topic_prefix,
        stop_event=stop, fleet=[acting, twin]))
    simulator.start()
    spy = SetSpy(mqtt_url, topic_prefix)
    executor = None
    db = Database(pg_url)
    try:
        deadline = time.monotonic() + 60
        while not db.rows("SELECT 1 FROM devices WHERE home_id = 'loop-home' AND device_id = 'battery'"):
            assert time.monotonic() < deadline, "\n".join(flow.log_lines[-30:])
            time.sleep(0.3)
        now = datetime.now(timezone.utc)
        start = now.replace(microsecond=0) + timedelta(seconds=8)
        # Cheap first, dear later: charge now, discharge (and export) later.
        prices = [(0.10, 0.30), (0.10, 0.30), (0.60, 0.30), (0.60, 0.30)]
        problem = PlanProblem(start, SLOT, tuple(p for p, _ in prices), (300.0,) * 4, (),
                              tuple(e for _, e in prices), None, "GBP", "UTC", None,
                              Battery(CAPACITY_KWH, POWER_W, POWER_W, 0.9, CAPACITY_KWH / 2))
        plan = optimize(problem)
        assert plan.cost < plan.baseline_cost
        plan_id = PlanStore(db).accept("loop-home", problem, plan, "alice", now=now)
        executor = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "execute", "--store-url", pg_url, "--mqtt-url", mqtt_url,
             "--topic-prefix", topic_prefix, "--client-id", f"exec-{uuid.uuid4().hex[:8]}",
             "--interval", "0.5", "--settle-s", "3", "--window-s", "8", "--store-delay-s", "3",
             "--ack-timeout-s", "15"],
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        end = start + SLOT * len(prices)
        plans = PlanStore(db)
        deadline = time.monotonic() + (end - now).total_seconds() + 60
        while True:
            statuses = {c.status for c in plans.commands(plan_id)}
            if statuses <= {"confirmed", "not_followed", "superseded"} and datetime.now(timezone.utc) > end:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(1.0)
        commands = plans.commands(plan_id)
        assert [c.status for c in commands] == ["confirmed"] * len(commands), [
            (c.command.value_w, c.status, c.message) for c in commands]
        assert {c.command.value_w for c in commands} >= {POWER_W}  # it charged at full power
        assert any((c.command.value_w or 0) < 0 for c in commands)  # and discharged when dear
        for c in commands:  # on the wire at its time, acknowledged by the device through the flow
            wire = [body for topic, body in spy.messages if body["command_id"] == c.command_id]
            assert wire == [{"command_id": c.command_id, "state": "on", "battery_w": c.command.value_w}]
            assert c.sent_at is not None and abs((c.sent_at - c.command.run_at).total_seconds()) < 3
            assert c.acked_at is not None and c.measured_w is not None
            assert abs(c.measured_w - (c.command.value_w or 0)) <= 300
        acks = db.rows("SELECT count(*) FROM command_acks WHERE home_id = 'loop-home' AND status = 'applied'")
        assert acks[0][0] == len(commands)
        slots = planned_vs_actual(plans, plan_id)
        assert all(s.measured_grid_w is not None for s in slots)
        assert sum(abs(s.measured["battery"] - s.planned["battery"]) for s in slots) / len(slots) < 400  # type: ignore[operator]
        # The measured cost: the plan's home against its twin whose battery stayed idle.
        acted = _cost([r for r in store.readings("loop-home", start, end) if r.device_id == "mains"], start, prices)
        idle = _cost([r for r in store.readings("twin-home", start, end) if r.device_id == "mains"], start, prices)
        assert acted < idle - 0.5 * plan.saving, (acted, idle, plan.saving)
        status = subprocess.run([sys.executable, "-m", "pipeline.cli", "execute", "--store-url", pg_url,
                                 "--status", "--plan", plan_id], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert status.returncode == 0, status.stderr
        assert "confirmed" in status.stdout and "measured grid cost so far" in status.stdout
    finally:
        if executor is not None:
            executor.send_signal(signal.SIGTERM)
            out, _ = executor.communicate(timeout=30)
            assert executor.returncode == 0, out[-3000:]
        stop.set()
        simulator.join(10)
        publisher.close()
        flow.stop()
        db.close()
        store.close()


def test_a_battery_that_does_not_move_is_caught_and_the_rest_is_planned_again(sqlite_url, mqtt_url,
                                                                                topic_prefix):
    t0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
    slot = timedelta(minutes=15)
    store = open_store(sqlite_url)
    store.migrate()
    db = Database(sqlite_url)
    prices = (0.05,) + (0.30,) * 3 + (0.60,) * 4  # charge first, discharge (and export) in the last hour
    problem = PlanProblem(t0, slot, prices, (400.0,) * 8, (), (0.05,) * 4 + (0.40,) * 4, None, "GBP", "UTC", None,
                          Battery(4.0, 2000.0, 2000.0, 0.9, 1.0),
                          EvCharge(2.0, 7200.0, t0, t0 + timedelta(hours=2)))
    plan = optimize(problem)
    plans = PlanStore(db)
    plan_id = plans.accept("h1", problem, plan, "alice", now=t0)
    spy = SetSpy(mqtt_url, topic_prefix)
    sender = Publisher(mqtt_url, client_id=f"exec-{uuid.uuid4().hex[:8]}")

    def send(topic: str, payload: bytes) -> None:
        sender.publish_raw(topic, payload)
        sender.flush(10)

    executor = PlanExecutor(db, send, ExecutorSettings(topic_prefix, ack_timeout_s=60, settle_s=60,
                                                       window_s=120, store_delay_s=0))
    try:
        first = executor.poll(t0 + timedelta(seconds=1))
        assert first.sent == 2  # the battery's setpoint and the EV's limit for the first slot
        sent = plans.commands(plan_id, statuses=("sent",))
        battery_cmd = next(c for c in sent if c.command.device_id == "battery")
        assert battery_cmd.command.value_w == pytest.approx(2000.0)
        deadline = time.monotonic() + 10
        while len(spy.messages) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert {topic for topic, _ in spy.messages} == {f"{topic_prefix}shems/h1/battery/set",
                                                        f"{topic_prefix}shems/h1/ev/set"}
        # Both answer "applied"; the EV charges as told, the battery stays at 0 W.
        acks = [CommandAck("h1", c.command.device_id, c.command_id, AckStatus.APPLIED, CommandState.ON,
                           t0 + timedelta(seconds=2), t0 + timedelta(seconds=2)) for c in sent]
        readings = []
        for s in range(0, 600, 10):
            ts = t0 + timedelta(seconds=s)
            ev = next(c for c in sent if c.command.device_id == "ev").command.expect_w
            readings += [Reading("h1", "battery", ts, 0.0, kind=DeviceKind.BATTERY),
                         Reading("h1", "ev", ts, ev, kind=DeviceKind.EV),
                         Reading("h1", "mains", ts, 400.0 + ev, kind=DeviceKind.METER)]
        store.write(Batch(readings=readings, command_acks=acks))
        assert executor.poll(t0 + timedelta(seconds=5)).acknowledged == 2
        result = executor.poll(t0 + timedelta(minutes=4))
        assert result.confirmed == 1 and result.not_followed == 1 and len(result.replanned) == 1
        judged = {c.command.device_id: c for c in plans.commands(plan_id) if c.command_id in
                  {x.command_id for x in sent}}
        assert judged["battery"].status == "not_followed" and judged["battery"].measured_w == 0.0
        assert "expects 2,000 W" in judged["battery"].message
        assert judged["ev"].status == "confirmed"
        # The battery gets no more commands from this plan; the new plan is the EV's alone.
        assert all(c.status == "superseded" for c in plans.commands(plan_id)
                   if c.command.device_id == "battery" and c.command_id != battery_cmd.command_id)
        (new_id,) = result.replanned
        new = plans.plan(new_id)
        assert new is not None and new.replaces == plan_id and new.status == "active"
        assert new.problem.battery is None and new.problem.start == t0
        assert new.problem.ev is not None and new.problem.ev.energy_kwh < 2.0  # what it had already
        assert {c.command.device_id for c in plans.commands(new_id)} == {"ev"}
        assert plans.plan(plan_id).status == "replaced"  # type: ignore[union-attr]
    finally:
        sender.close()
        db.close()
        store.close()
