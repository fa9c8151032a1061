"""Plans carried out, end to end through the real Mosquitto, the real flow and PostgreSQL:

plan proposed, accepted on the viewer's Plan page (AppTest) -> ``shems execute`` sends battery setpoints at their times -> the simulated home's
battery obeys and acknowledges -> flow -> command_acks and readings -> executor confirms each
setpoint by measured power; the home's measured cost is below its twin's (same seed, same loads,
its battery left idle) over the plan.

And, on every store with readings written by the test: a battery that acknowledges but does
not move is caught, its remaining commands are dropped and the rest is planned again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.cli import main
from pipeline.energy.device_control import BatteryModel
from pipeline.energy.optimize import Battery, EvCharge, PlanProblem, optimize
from pipeline.records import AckStatus, CommandAck, CommandState, DeviceKind, Reading
from pipeline.tools.plan_executor import ExecutorSettings, PlanExecutor
from pipeline.tools.publisher import Publisher
from pipeline.tools.simulator import SimulatedHome, run_simulation
from sinks.base import Batch
from sinks.stores import open_store
from tests.flowproc import ROOT, FlowProcess
from tests.viewer_seed import APP, apply_env, viewer_env
from ui.accounts import Accounts
from ui.auth import Role
from ui.db import Database
from ui.plans import PlanStore, planned_vs_actual

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


def shown(markdown: str) -> str:
    """What a person reads from Markdown the viewer escaped (``ui.safe.md_escape``)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def plan_page(token: str, home: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["session_token"] = token
    at.query_params["home"] = home
    at.run()
    at.switch_page("views/plan.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_plan_accepted_in_the_viewer_runs_the_battery_and_costs_less_than_its_twin(
        pg_url, mqtt_url, topic_prefix, monkeypatch):
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
        start = now.replace(microsecond=0) + timedelta(seconds=40)  # time to accept it
        # Cheap first, dear later: charge now, discharge (and export) later.
        prices = [(0.10, 0.30), (0.10, 0.30), (0.60, 0.30), (0.60, 0.30)]
        problem = PlanProblem(start, SLOT, tuple(p for p, _ in prices), (300.0,) * 4, (),
                              tuple(e for _, e in prices), None, "GBP", "UTC", None,
                              Battery(CAPACITY_KWH, POWER_W, POWER_W, 0.9, CAPACITY_KWH / 2))
        plan = optimize(problem)
        assert plan.cost < plan.baseline_cost
        plan_id = PlanStore(db).propose("loop-home", problem, plan, "shems plan", now=now)
        Accounts(db).add_user("alice", "alice-secret-1", Role.HOMEOWNER, ["loop-home"], by="test")
        token = Accounts(db).sign_in("alice", "alice-secret-1").token
        apply_env(monkeypatch, viewer_env(pg_url))
        at = plan_page(token, "loop-home")
        header = [shown(m.value) for m in at.markdown if plan_id in shown(m.value)]
        assert header and "proposed" in header[0] and "4 slots of 15 s" in header[0], header
        at.button(key="plan_accept").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert PlanStore(db).plan(plan_id).status == "active"  # type: ignore[union-attr]
        assert db.rows("SELECT username, detail FROM audit_log WHERE action = 'plan_accept'") == [
            ("alice", plan_id)]
        assert datetime.now(timezone.utc) < start, "accepting took longer than the lead time"
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
            assert c.sent_at is not None and abs((c.sent_at - c.command.run_at).total_seconds()) < 5
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
        print(f"measured grid cost over the plan: {acted:.5f} GBP with it, {idle:.5f} GBP for the idle twin; "
              f"planned saving {plan.saving:.5f} GBP")
        assert acted < idle - 0.5 * plan.saving, (acted, idle, plan.saving)
        status = subprocess.run([sys.executable, "-m", "pipeline.cli", "execute", "--store-url", pg_url,
                                 "--status", "--plan", plan_id], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert status.returncode == 0, status.stderr
        assert "confirmed" in status.stdout and "measured grid cost so far" in status.stdout
        at = plan_page(token, "loop-home")  # the page shows what became of each command
        table = at.dataframe[0].value
        assert list(table["Status"]) == ["confirmed"] * len(commands)
        assert len(at.get("plotly_chart")) == 2  # grid and battery, planned against measured
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
        st.cache_resource.clear()


def test_a_battery_that_does_not_move_is_caught_and_the_rest_is_planned_again(store_url, mqtt_url,
                                                                                topic_prefix):
    t0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
    slot = timedelta(minutes=15)
    store = open_store(store_url)
    store.migrate()
    db = Database(store_url)
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


def test_shems_plan_accept_and_propose_store_the_plan_and_its_commands(sqlite_url, tmp_path, capsys):
    prices = tmp_path / "prices.csv"
    t0 = datetime(2030, 1, 5, tzinfo=timezone.utc)
    prices.write_text("ts,import_price,export_price\n" + "".join(
        f"{(t0 + timedelta(hours=h)).isoformat()},{0.1 if h < 6 else 0.5},0.05\n" for h in range(24)))
    common = ["plan", "--prices", str(prices), "--currency", "GBP", "--date", "2030-01-05", "--tz", "UTC",
              "--base-load-w", "300", "--battery", "capacity_kwh=5,power_kw=2,efficiency=0.9,soc=0.5",
              "--load", "washer,1,1,08:00,20:00", "--store-url", sqlite_url, "--home", "h1", "--json"]
    assert main([*common, "--accept"]) == 0
    accepted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan_id"]
    assert main([*common, "--propose"]) == 0
    proposed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan_id"]
    db = Database(sqlite_url)
    try:
        plans = PlanStore(db)
        assert plans.plan(accepted).status == "active" and plans.plan(proposed).status == "proposed"  # type: ignore[union-attr]
        commands = plans.commands(accepted)
        assert {c.status for c in commands} == {"pending"}
        washer = [(c.command.run_at.hour, c.command.state.value) for c in commands if c.command.device_id == "washer"]
        assert washer == [(0, "off"), (8, "on"), (9, "off")]  # held off, then run at its earliest cheap hour
        assert any(c.command.kind == "battery" for c in commands)
        assert {c.status for c in plans.commands(proposed)} == {"proposed"}
        assert plans.activate(proposed, "alice") and not plans.activate(proposed, "alice")
        assert plans.plan(accepted).status == "replaced"  # type: ignore[union-attr]
        assert {c.status for c in plans.commands(accepted)} == {"superseded"}
    finally:
        db.close()
    assert main(["plan", "--prices", str(prices), "--date", "2030-01-05", "--tz", "UTC", "--battery",
                 "capacity_kwh=5,power_kw=2", "--accept"]) == 2
    assert "give --store-url and --home" in capsys.readouterr().err


def test_execute_says_in_one_line_when_the_broker_or_the_plan_is_not_there(sqlite_url):
    from pipeline.tools.broker import free_port

    open_store(sqlite_url).migrate()
    down = subprocess.run([sys.executable, "-m", "pipeline.cli", "execute", "--store-url", sqlite_url,
                           "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}", "--once"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and "cannot reach the broker" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr
    missing = subprocess.run([sys.executable, "-m", "pipeline.cli", "execute", "--store-url", sqlite_url,
                              "--status", "--plan", "p-nope"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip() == "shems execute: error: no plan 'p-nope'"


def test_only_the_household_accepts_and_no_one_sees_another_homes_plan(sqlite_url, monkeypatch):
    store = open_store(sqlite_url)
    store.migrate()
    now = datetime.now(timezone.utc)
    store.write(Batch(readings=[Reading(h, "battery", now, 0.0, kind=DeviceKind.BATTERY) for h in ("h1", "h2")]))
    store.close()
    db = Database(sqlite_url)
    problem = PlanProblem(now + timedelta(minutes=1), SLOT, (0.1, 0.1, 0.6, 0.6), (300.0,) * 4, (), (0.3,) * 4,
                          None, "GBP", "UTC", None, Battery(CAPACITY_KWH, POWER_W, POWER_W, 0.9, CAPACITY_KWH / 2))
    plan_id = PlanStore(db).propose("h1", problem, optimize(problem), "shems plan", now=now)
    accounts = Accounts(db)
    accounts.add_user("bob", "bob-secret-123", Role.HOMEOWNER, ["h2"], by="test")
    accounts.add_user("olga", "olga-secret-12", Role.OPERATOR, [], by="test")
    apply_env(monkeypatch, viewer_env(sqlite_url))
    try:
        at = plan_page(accounts.sign_in("bob", "bob-secret-123").token, "h1")
        assert at.error and not any(plan_id in shown(m.value) for m in at.markdown)
        assert not [b for b in at.button if b.key == "plan_accept"]
        at = plan_page(accounts.sign_in("olga", "olga-secret-12").token, "h1")
        assert any(plan_id in shown(m.value) for m in at.markdown)
        assert not [b for b in at.button if b.key == "plan_accept"]
        assert any("Only the household accepts" in c.value for c in at.caption)
        assert PlanStore(db).plan(plan_id).status == "proposed"  # type: ignore[union-attr]
    finally:
        db.close()
        st.cache_resource.clear()


def test_shems_simulate_gives_homes_a_battery_that_obeys_setpoints(mqtt_url, topic_prefix):
    got: dict[str, list[dict]] = {"reading": [], "ack": []}
    spy = Publisher(mqtt_url, client_id=f"spy-{uuid.uuid4().hex[:8]}")
    spy.subscribe(f"{topic_prefix}shems/sim-home-0000/battery/+",
                  lambda m: got.setdefault(m.topic.rsplit("/", 1)[1], []).append(json.loads(m.payload)))
    sim = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "simulate", "--mqtt-url", mqtt_url,
                            "--topic-prefix", topic_prefix, "--homes", "1", "--interval", "0.5",
                            "--duration", "40", "--battery", "capacity_kwh=1,power_kw=1,soc=0.5"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not got["reading"]:
            assert time.monotonic() < deadline and sim.poll() is None, sim.stderr.read() if sim.stderr else ""
            time.sleep(0.2)
        assert got["reading"][-1]["power_w"] == 0.0  # idle until told
        spy.publish_raw(f"{topic_prefix}shems/sim-home-0000/battery/set",
                        b'{"command_id":"c-sim","state":"on","battery_w":-2500}')
        spy.flush(10)
        while not (got["ack"] and got["reading"][-1]["power_w"] == -1000.0):
            assert time.monotonic() < deadline, (got["ack"], got["reading"][-3:])
            time.sleep(0.2)
        assert got["ack"][0]["status"] == "applied" and got["ack"][0]["message"] == "battery -2,500 W"
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
        spy.close()
