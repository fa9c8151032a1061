"""The command protocol, the switchboard simulated devices obey, and the ack decoder."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.energy.device_control import SetCommand, SwitchBoard, ack_payload
from pipeline.ingest.decode import SUBSCRIPTIONS, decode, route_key
from pipeline.ingest.decode.common import DecodeError
from pipeline.ingest.registry import Registry
from pipeline.records import AckStatus, CommandAck, CommandState, DeadLetter, DeviceKind, RawMessage
from pipeline.settings import ValidationSettings
from pipeline.tools.simulator import make_homes

T0 = datetime(2026, 1, 5, 18, 0, tzinfo=timezone.utc)


def _board(**kw) -> SwitchBoard:
    return SwitchBoard({("h", "washer"): DeviceKind.APPLIANCE, ("h", "mains"): DeviceKind.METER,
                        ("h", "pv"): DeviceKind.PV}, **kw)


def test_set_payload_round_trips_and_bad_ones_say_why():
    cmd = SetCommand("c-1", CommandState.OFF, T0)
    assert SetCommand.parse(cmd.payload(), T0) == cmd
    assert json.loads(SetCommand("c-2", CommandState.ON).payload()) == {"command_id": "c-2", "state": "on"}
    with pytest.raises(DecodeError, match="state must be 'on' or 'off', got 'dim'"):
        SetCommand.parse(b'{"command_id": "c", "state": "dim"}', T0)
    with pytest.raises(DecodeError, match="not JSON"):
        SetCommand.parse(b"off", T0)


def test_switchboard_switches_schedules_and_refuses_meters():
    board = _board()
    ack = board.command("h", "washer", SetCommand("c-1", CommandState.OFF), T0)
    assert (ack.status, ack.state) == (AckStatus.APPLIED, CommandState.OFF)
    assert board.power("h", "washer", 2000.0) == 0.0
    later = SetCommand("c-2", CommandState.ON, T0 + timedelta(minutes=5))
    assert board.command("h", "washer", later, T0).status is AckStatus.SCHEDULED
    assert board.due(T0 + timedelta(minutes=4)) == []
    (applied,) = board.due(T0 + timedelta(minutes=5))
    assert (applied.command_id, applied.status, applied.state) == ("c-2", AckStatus.APPLIED, CommandState.ON)
    assert board.power("h", "washer", 2000.0) == 2000.0
    meter = board.command("h", "mains", SetCommand("c-3", CommandState.OFF), T0)
    assert meter.status is AckStatus.REJECTED and meter.message == "a meter cannot be switched"
    assert board.command("h", "oven", SetCommand("c-4", CommandState.OFF), T0).status is AckStatus.REJECTED


def test_a_welded_relay_acknowledges_but_keeps_drawing():
    board = _board(stuck=frozenset({("h", "washer")}))
    assert board.command("h", "washer", SetCommand("c", CommandState.OFF), T0).status is AckStatus.APPLIED
    assert board.power("h", "washer", 2000.0) == 2000.0


def test_a_simulated_home_without_its_washer_is_seen_by_its_meter():
    home = make_homes(1)[0]
    t = T0
    while home.power_at(t)["fridge"] < 50:  # a moment when the fridge compressor runs
        t += timedelta(minutes=1)
    board = SwitchBoard({(home.home_id, d): k for d, k in home.devices()})
    normal = home.power_at(t)
    board.command(home.home_id, "fridge", SetCommand("c", CommandState.OFF), t)
    switched = home.power_at(t, lambda device, power: board.power(home.home_id, device, power))
    assert switched["fridge"] == 0.0
    assert switched["mains"] == pytest.approx(normal["mains"] - normal["fridge"], abs=0.11)


def test_acks_are_decoded_into_records_and_bad_ones_dead_lettered():
    assert "shems/+/+/ack" in SUBSCRIPTIONS
    assert route_key("shems/h/washer/ack") == "ack/h/washer"
    ack = CommandAck("h", "washer", "c-1", AckStatus.APPLIED, CommandState.OFF, T0, T0, "")
    msg = RawMessage("shems/h/washer/ack", ack_payload(ack), T0 + timedelta(seconds=1))
    _, (got,) = decode(None, msg, Registry.empty(), ValidationSettings())
    assert got == CommandAck("h", "washer", "c-1", AckStatus.APPLIED, CommandState.OFF, T0,
                             T0 + timedelta(seconds=1), "")
    bad = RawMessage("shems/h/washer/ack", b'{"command_id": "c-1", "status": "done", "state": "off"}', T0)
    _, (dead,) = decode(None, bad, Registry.empty(), ValidationSettings())
    assert isinstance(dead, DeadLetter) and "status 'done' is not one of applied" in dead.reason


def test_acks_are_stored_once(store_url):
    from sinks.base import Batch
    from sinks.stores import open_store

    ack = CommandAck("h", "washer", "c-1", AckStatus.APPLIED, CommandState.OFF, T0, T0, "")
    store = open_store(store_url)
    try:
        store.migrate()
        store.write(Batch(command_acks=[ack, ack]))  # a QoS 1 redelivery in the same batch
        store.write(Batch(command_acks=[ack]))
        rows = store.conn.execute("SELECT command_id, status, state FROM command_acks").fetchall()
        assert [tuple(r) for r in rows] == [("c-1", "applied", "off")]
    finally:
        store.close()
