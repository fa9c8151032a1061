"""The control loop end to end, through the real Mosquitto, the real flow and PostgreSQL:

viewer (AppTest) -> <prefix>shems/<home>/<device>/set -> simulated device obeys and acks on
.../ack -> flow -> command_acks -> viewer shows the answer and checks the device's readings.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.energy.device_control import SetCommand, SwitchBoard, ack_payload, ack_topic
from pipeline.records import CommandState, DeviceKind, Reading
from pipeline.tools.publisher import Publisher
from pipeline.tools.simulator import run_simulation
from sinks.stores import open_store
from tests.conftest import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL, _unique
from tests.flowproc import FlowProcess
from tests.viewer_seed import APP, apply_env, viewer_env
from ui import control
from ui.accounts import Accounts
from ui.auth import Principal, Role
from ui.db import Database
from ui.settings import ViewerSettings

SIM_HOME = "sim-home-0000"
PLUG_HOME = "plug-home"  # a space heater on a plug whose relay is welded, and a lamp nobody answers for
PASSWORD = "alice-secret-1"
ALICE = Principal("alice", Role.HOMEOWNER, frozenset({SIM_HOME, PLUG_HOME}))


class WeldedHeater:
    """A 1.5 kW heater behind a smart plug that acknowledges every command and never switches:
    the same SwitchBoard the simulator uses, with the relay stuck."""

    def __init__(self, publisher: Publisher, prefix: str) -> None:
        self.publisher, self.prefix = publisher, prefix
        self.board = SwitchBoard({(PLUG_HOME, "heater"): DeviceKind.APPLIANCE},
                                 stuck=frozenset({(PLUG_HOME, "heater")}))
        self.stop = threading.Event()
        publisher.subscribe(f"{prefix}shems/{PLUG_HOME}/heater/set", self._on_set)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_set(self, msg) -> None:
        now = datetime.now(timezone.utc)
        ack = self.board.command(PLUG_HOME, "heater", SetCommand.parse(msg.payload, now), now)
        self.publisher.publish_nowait(ack_topic(PLUG_HOME, "heater", self.prefix), ack_payload(ack))

    def _run(self) -> None:
        while not self.stop.is_set():
            now = datetime.now(timezone.utc)
            for device, natural in (("heater", 1500.0), ("lamp", 40.0)):
                self.publisher.publish_reading(
                    Reading(PLUG_HOME, device, now, self.board.power(PLUG_HOME, device, natural)),
                    self.prefix)
            self.stop.wait(0.5)


class SetSpy:
    """Records what is published on the set topics, to check the viewer's command on the wire."""

    def __init__(self, prefix: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.publisher = Publisher(f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
        self.publisher.subscribe(f"{prefix}shems/+/+/set",
                                 lambda m: self.messages.append((m.topic, json.loads(m.payload))))


@pytest.fixture(scope="module")
def loop():
    name = _unique("shems_control")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    prefix = f"shems-test/{uuid.uuid4().hex[:12]}/"
    mqtt_url = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
    store = open_store(url)
    store.migrate()
    store.close()
    flow = FlowProcess(mqtt_url, url, prefix).start()
    spy = SetSpy(prefix)
    publisher = Publisher(mqtt_url)
    stop = threading.Event()
    simulator = threading.Thread(target=run_simulation, daemon=True, kwargs=dict(
        publisher=publisher, homes=1, interval_s=0.5, duration_s=None, topic_prefix=prefix, seed=1,
        stop_event=stop))
    simulator.start()
    heater = WeldedHeater(Publisher(mqtt_url), prefix)
    db = Database(url)
    Accounts(db).add_user("alice", PASSWORD, Role.HOMEOWNER, [SIM_HOME, PLUG_HOME], by="test")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # devices appear once the flow has stored their readings
        homes = {h for (h,) in db.rows("SELECT DISTINCT home_id FROM devices")}
        if {SIM_HOME, PLUG_HOME} <= homes:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("the flow stored no reading:\n" + "\n".join(flow.log_lines[-30:]))
    token = Accounts(db).sign_in("alice", PASSWORD).token
    yield {"url": url, "prefix": prefix, "mqtt_url": mqtt_url, "db": db, "spy": spy,
           "token": token, "flow": flow}
    stop.set()
    heater.stop.set()
    simulator.join(10)
    heater.thread.join(10)
    publisher.close()
    flow.stop()
    db.close()
    st.cache_resource.clear()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def env(loop, monkeypatch):
    apply_env(monkeypatch, viewer_env(loop["url"], SHEMS_MQTT_URL=loop["mqtt_url"],
                                      SHEMS_TOPIC_PREFIX=loop["prefix"], ack_timeout_s="4",
                                      stale_after_s="60"))


def devices_page(loop, home: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["session_token"] = loop["token"]
    at.query_params["home"] = home
    at.run()
    at.switch_page("views/devices.py").run()
    assert not at.exception, [e.value for e in at.exception]
    # The only error a page of hers may show is the welded heater's report.
    assert all("heater** was switched off" in e.value for e in at.error), [e.value for e in at.error]
    return at


def switch_off(at: AppTest, device: str) -> None:
    at.selectbox(key="control_device").set_value(device)
    at.button(key="control_off").click().run()
    assert not at.exception, [e.value for e in at.exception]


def shown(markdown: str) -> str:
    """What a person reads from Markdown the viewer escaped (``ui.safe.md_escape``)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def wait_for_answer(at: AppTest, kinds: tuple[str, ...], timeout: float = 30.0) -> str:
    """Re-run the page (as the fragment's timer would) until the last command has a final answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind in kinds:
            for element in getattr(at, kind):
                if element.value.startswith("Last command"):
                    return f"{kind}: {shown(element.value)}"
        time.sleep(0.5)
        at.run()
    pending = [i.value for i in at.info]
    raise AssertionError(f"no final answer within {timeout} s; showing {pending}")


def test_switch_off_is_published_obeyed_acknowledged_and_confirmed(loop):
    at = devices_page(loop, SIM_HOME)
    switch_off(at, "fridge")
    command_id = at.session_state["last_command"]
    answer = wait_for_answer(at, ("success", "warning", "error"))
    assert answer.startswith("success: Last command (fridge off")
    assert "fridge is off: 0 W" in answer
    # On the wire, under the test's topic prefix.
    topic, payload = next((t, p) for t, p in loop["spy"].messages if p["command_id"] == command_id)
    assert topic == f"{loop['prefix']}shems/{SIM_HOME}/fridge/set"
    assert payload == {"command_id": command_id, "state": "off"}
    db = loop["db"]
    assert db.rows("SELECT status, state FROM command_acks WHERE command_id = :c",
                   {"c": command_id}) == [("applied", "off")]
    assert db.rows("SELECT issued_by, device_id, state FROM device_commands WHERE command_id = :c",
                   {"c": command_id}) == [("alice", "fridge", "off")]
    audit = db.rows("SELECT username, action, home_id, device_id, detail FROM audit_log "
                    "WHERE action = 'command' AND detail LIKE :c", {"c": f"{command_id}%"})
    assert audit == [("alice", "command", SIM_HOME, "fridge", f"{command_id} off")]
    log = at.dataframe[-1].value
    assert list(log[["By", "Device", "Switch to", "Answer"]].iloc[0]) == \
        ["alice", "fridge", "off", "applied"]
    # The meter sees it too: the fridge draws nothing now.
    latest = db.rows("SELECT power_w FROM readings WHERE home_id = :h AND device_id = 'fridge' "
                     "ORDER BY ts DESC LIMIT 1", {"h": SIM_HOME})[0][0]
    assert latest == 0.0
    control.send_command(db, Accounts(db), ViewerSettings(mqtt_url=loop["mqtt_url"],
                                                          topic_prefix=loop["prefix"]),
                         ALICE, SIM_HOME, "fridge", CommandState.ON)  # leave it as found


def test_a_device_that_keeps_drawing_after_off_is_reported(loop):
    at = devices_page(loop, PLUG_HOME)
    switch_off(at, "heater")
    answer = wait_for_answer(at, ("success", "warning", "error"))
    assert answer.startswith("warning: Last command (heater off")
    assert "heater acknowledged OFF but still draws 1,500 W" in answer
    at.run()
    assert any(e.value.startswith("**heater** was switched off at") and "still draws 1,500 W"
               in e.value for e in at.error)


def test_no_answer_is_a_timeout(loop):
    at = devices_page(loop, PLUG_HOME)
    started = time.monotonic()
    switch_off(at, "lamp")
    # Just sent: the log agrees with the status box that it is awaited (it said "no answer").
    assert at.dataframe[-1].value["Answer"].iloc[0] == "waiting"
    answer = wait_for_answer(at, ("error", "success", "warning"))
    assert answer.startswith("error: Last command (lamp off")
    assert "No answer from lamp within 4 s" in answer
    assert time.monotonic() - started >= 3.9  # not before the 4-second timeout
    command_id = at.session_state["last_command"]
    assert loop["db"].rows("SELECT count(*) FROM command_acks WHERE command_id = :c",
                           {"c": command_id}) == [(0,)]
    at.run()
    assert at.dataframe[-1].value["Answer"].iloc[0] == "no answer"


def test_a_scheduled_command_is_acknowledged_then_applied(loop):
    db = loop["db"]
    settings = ViewerSettings(mqtt_url=loop["mqtt_url"], topic_prefix=loop["prefix"], ack_timeout_s=10)
    run_at = datetime.now(timezone.utc) + timedelta(seconds=3)
    command = control.send_command(db, Accounts(db), settings, ALICE, SIM_HOME, "washer",
                                   CommandState.OFF, run_at)
    phases = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, status = control.command_status(db, ALICE, command.command_id,
                                           datetime.now(timezone.utc), settings)
        if not phases or phases[-1] != status.phase:
            phases.append(status.phase)
        if status.final:
            break
        time.sleep(0.3)
    assert phases[-1] == "confirmed" and "scheduled" in phases, phases
    acks = db.rows("SELECT status FROM command_acks WHERE command_id = :c ORDER BY ts",
                   {"c": command.command_id})
    assert acks == [("scheduled",), ("applied",)]
    control.send_command(db, Accounts(db), settings, ALICE, SIM_HOME, "washer", CommandState.ON)


def test_commands_are_rate_limited_per_user(loop):
    db = loop["db"]
    settings = ViewerSettings(mqtt_url=loop["mqtt_url"], topic_prefix=loop["prefix"],
                              commands_per_minute=1)
    bob = Principal("bob", Role.OPERATOR, frozenset())
    control.send_command(db, Accounts(db), settings, bob, SIM_HOME, "kettle", CommandState.ON)
    with pytest.raises(control.CommandRefused, match="At most 1 commands a minute"):
        control.send_command(db, Accounts(db), settings, bob, SIM_HOME, "kettle", CommandState.ON)
    assert db.rows("SELECT count(*) FROM device_commands WHERE issued_by = 'bob'") == [(1,)]
