"""Switching devices: the command protocol and a pure switchboard that simulated devices obey.

The viewer publishes a :class:`SetCommand` on ``shems/<home>/<device>/set`` (QoS 1)::

    {"command_id": "c-…", "state": "on"|"off", "at": ISO 8601 (optional: run then, not now)}

The device answers on ``shems/<home>/<device>/ack`` (decoded by ``pipeline.ingest.decode.ack``)::

    {"command_id": "c-…", "status": "applied"|"scheduled"|"rejected", "state": "on"|"off",
     "ts": ISO 8601, "message": "…"}

A scheduled command is acknowledged twice: ``scheduled`` when received, ``applied`` when run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, obj, parse_ts
from pipeline.records import AckStatus, CommandAck, CommandState, DeviceKind

# Kinds a relay may switch: a meter measures the house and PV is not ours to curtail.
SWITCHABLE_KINDS = frozenset({DeviceKind.APPLIANCE, DeviceKind.EV, DeviceKind.BATTERY})


def set_topic(home_id: str, device_id: str, topic_prefix: str = "") -> str:
    return f"{topic_prefix}shems/{home_id}/{device_id}/set"


def ack_topic(home_id: str, device_id: str, topic_prefix: str = "") -> str:
    return f"{topic_prefix}shems/{home_id}/{device_id}/ack"


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SetCommand:
    command_id: str
    state: CommandState
    run_at: datetime | None = None  # None: now

    def payload(self) -> bytes:
        body: dict[str, str] = {"command_id": self.command_id, "state": self.state.value}
        if self.run_at is not None:
            body["at"] = _iso(self.run_at)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes, received_at: datetime) -> SetCommand:
        """Raises DecodeError with a sentence saying what is wrong."""
        try:
            body = obj(json.loads(payload.decode("utf-8")), "set payload")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"set payload is not JSON: {exc}") from None
        command_id, state = body.get("command_id"), body.get("state")
        if not isinstance(command_id, str) or not 0 < len(command_id) <= 64:
            raise DecodeError(f"command_id must be a string of 1-64 characters, got {command_id!r}")
        try:
            state_value = CommandState(state)
        except ValueError:
            raise DecodeError(f"state must be 'on' or 'off', got {state!r}") from None
        run_at = parse_ts(body["at"], received_at, "at") if body.get("at") is not None else None
        return cls(command_id, state_value, run_at)


def ack_payload(ack: CommandAck) -> bytes:
    return json.dumps({"command_id": ack.command_id, "status": ack.status.value,
                       "state": ack.state.value, "ts": _iso(ack.ts), "message": ack.message},
                      separators=(",", ":")).encode()


@dataclass
class SwitchBoard:
    """The relays of a set of devices: commanded state, pending schedules, and what the relay lets
    through. Pure (the caller passes the time), so a simulator and tests share it.

    ``stuck`` devices model a welded relay: they acknowledge but keep drawing power, which is what
    the viewer's effect check must catch.
    """

    devices: dict[tuple[str, str], DeviceKind]
    off_power_w: float = 0.0
    stuck: frozenset[tuple[str, str]] = frozenset()
    _off: set[tuple[str, str]] = field(default_factory=set)
    _pending: list[tuple[datetime, str, str, SetCommand]] = field(default_factory=list)

    def handles(self, home_id: str) -> bool:
        return any(h == home_id for h, _ in self.devices)

    def command(self, home_id: str, device_id: str, cmd: SetCommand, now: datetime) -> CommandAck:
        key = (home_id, device_id)
        kind = self.devices.get(key)
        current = CommandState.OFF if key in self._off else CommandState.ON
        if kind is None:
            return self._ack(key, cmd, AckStatus.REJECTED, current, now, f"no device {device_id!r} here")
        if kind not in SWITCHABLE_KINDS:
            return self._ack(key, cmd, AckStatus.REJECTED, current, now,
                             f"a {kind.value} cannot be switched")
        if cmd.run_at is not None and cmd.run_at > now:
            self._pending.append((cmd.run_at, home_id, device_id, cmd))
            self._pending.sort(key=lambda p: p[0])
            return self._ack(key, cmd, AckStatus.SCHEDULED, current, now,
                             f"will switch {cmd.state.value} at {_iso(cmd.run_at)}")
        return self._apply(key, cmd, now)

    def due(self, now: datetime) -> list[CommandAck]:
        """Run the scheduled commands whose time has come."""
        acks = []
        while self._pending and self._pending[0][0] <= now:
            _, home_id, device_id, cmd = self._pending.pop(0)
            acks.append(self._apply((home_id, device_id), cmd, now))
        return acks

    def state(self, home_id: str, device_id: str) -> CommandState:
        return CommandState.OFF if (home_id, device_id) in self._off else CommandState.ON

    def power(self, home_id: str, device_id: str, natural_w: float) -> float:
        """What the device draws given what it would draw with its relay closed."""
        key = (home_id, device_id)
        if key in self._off and key not in self.stuck:
            return self.off_power_w
        return natural_w

    def _apply(self, key: tuple[str, str], cmd: SetCommand, now: datetime) -> CommandAck:
        if cmd.state is CommandState.OFF:
            self._off.add(key)
        else:
            self._off.discard(key)
        return self._ack(key, cmd, AckStatus.APPLIED, cmd.state, now, "")

    @staticmethod
    def _ack(key: tuple[str, str], cmd: SetCommand, status: AckStatus, state: CommandState,
             now: datetime, message: str) -> CommandAck:
        return CommandAck(key[0], key[1], cmd.command_id, status, state, now, now, message)
