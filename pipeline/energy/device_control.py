"""Switching devices: the command protocol and a pure switchboard that simulated devices obey.

The viewer publishes a :class:`SetCommand` on ``shems/<home>/<device>/set`` (QoS 1)::

    {"command_id": "c-…", "state": "on"|"off", "at": ISO 8601 (optional: run then, not now),
     "battery_w": W (optional, batteries: + charge / - discharge setpoint),
     "limit_w": W (optional, EV chargers: the most the car may draw)}

A payload without ``battery_w`` or ``limit_w`` is a plain switch, exactly as before they existed.

The device answers on ``shems/<home>/<device>/ack`` (decoded by ``pipeline.ingest.decode.ack``)::

    {"command_id": "c-…", "status": "applied"|"scheduled"|"rejected", "state": "on"|"off",
     "ts": ISO 8601, "message": "…"}

A scheduled command is acknowledged twice: ``scheduled`` when received, ``applied`` when run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, obj, parse_ts
from pipeline.records import AckStatus, CommandAck, CommandState, DeviceInfo, DeviceKind, Source

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
    battery_w: float | None = None  # a battery's setpoint: + charge, - discharge (W)
    limit_w: float | None = None  # an EV charger's power limit (W)

    @property
    def kind(self) -> str:
        """``switch``, ``battery`` or ``ev_limit``: what the command asks of the device."""
        return "battery" if self.battery_w is not None else "ev_limit" if self.limit_w is not None else "switch"

    def payload(self) -> bytes:
        body: dict[str, str | float] = {"command_id": self.command_id, "state": self.state.value}
        if self.run_at is not None:
            body["at"] = _iso(self.run_at)
        if self.battery_w is not None:
            body["battery_w"] = round(self.battery_w, 1)
        if self.limit_w is not None:
            body["limit_w"] = round(self.limit_w, 1)
        return json.dumps(body, separators=(",", ":")).encode()

    def describe(self) -> str:
        if self.battery_w is not None:
            return f"battery {self.battery_w:+,.0f} W"
        if self.limit_w is not None:
            return f"charge limit {self.limit_w:,.0f} W"
        return self.state.value

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
        battery_w, limit_w = _watts(body, "battery_w"), _watts(body, "limit_w")
        if battery_w is not None and limit_w is not None:
            raise DecodeError("a command sets battery_w or limit_w, not both")
        if limit_w is not None and limit_w < 0:
            raise DecodeError(f"limit_w must not be negative, got {limit_w}")
        return cls(command_id, state_value, run_at, battery_w, limit_w)


def _watts(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or abs(value) > 1e6:
        raise DecodeError(f"{name} must be a number of W (at most 1 MW), got {value!r}")
    return float(value)


class UnsupportedCommand(ValueError):
    """The device's vendor protocol has no way to carry this kind of command."""


# Which command kinds each vendor's own topics can carry (README, "Carrying out plans").
VENDOR_KINDS: dict[Source, frozenset[str]] = {
    Source.NATIVE: frozenset({"switch", "battery", "ev_limit"}),
    Source.SHELLY: frozenset({"switch"}),
    Source.TASMOTA: frozenset({"switch"}),
    Source.ZIGBEE2MQTT: frozenset({"switch"}),
}


def vendor_message(device: DeviceInfo, cmd: SetCommand, topic_prefix: str = "") -> tuple[str, bytes]:
    """The topic and payload that carry ``cmd`` to ``device`` in its vendor's own protocol.

    Only native devices answer on ``.../ack`` and take ``at``: a vendor relay switches now and
    is confirmed by its power alone, so a caller sends vendor commands at their time.
    Raises :class:`UnsupportedCommand` when the vendor cannot carry the command's kind.
    """
    if cmd.kind not in VENDOR_KINDS.get(device.source, frozenset()) or \
            (device.source is not Source.NATIVE and not device.vendor_id):
        raise UnsupportedCommand(f"{device.device_id} ({device.source.value}) cannot take a "
                                 f"{cmd.kind.replace('_', ' ')} command")
    on = cmd.state is CommandState.ON
    channel = device.channel or 0
    if device.source is Source.SHELLY:  # Gen2 RPC: Switch.Set on the channel's switch
        body = {"id": 1, "src": "shems", "method": "Switch.Set", "params": {"id": channel, "on": on}}
        return f"{topic_prefix}{device.vendor_id}/rpc", json.dumps(body).encode()
    if device.source is Source.TASMOTA:  # POWER<n> counts relays from 1; a single relay is POWER
        suffix = "" if device.channel is None else str(channel + 1)
        return f"{topic_prefix}cmnd/{device.vendor_id}/POWER{suffix}", b"ON" if on else b"OFF"
    if device.source is Source.ZIGBEE2MQTT:
        return f"{topic_prefix}zigbee2mqtt/{device.vendor_id}/set", json.dumps(
            {"state": "ON" if on else "OFF"}).encode()
    return set_topic(device.home_id, device.device_id, topic_prefix), cmd.payload()


def ack_payload(ack: CommandAck) -> bytes:
    return json.dumps({"command_id": ack.command_id, "status": ack.status.value,
                       "state": ack.state.value, "ts": _iso(ack.ts), "message": ack.message},
                      separators=(",", ":")).encode()


@dataclass
class BatteryModel:
    """A simulated battery: it draws its setpoint within its power limits while its state of
    charge allows (the round-trip efficiency split evenly between charging and discharging)."""

    capacity_kwh: float
    max_charge_w: float
    max_discharge_w: float
    efficiency: float = 0.9
    soc_kwh: float = 0.0
    setpoint_w: float = 0.0
    _since: datetime | None = None

    def draw_w(self) -> float:
        w = min(max(self.setpoint_w, -self.max_discharge_w), self.max_charge_w)
        if (w > 0 and self.soc_kwh >= self.capacity_kwh - 1e-9) or (w < 0 and self.soc_kwh <= 1e-9):
            return 0.0
        return w

    def advance(self, now: datetime, drawing: bool = True) -> None:
        """Move the state of charge on to ``now`` at the power drawn since the last call."""
        if self._since is not None and now > self._since and drawing:
            hours = (now - self._since).total_seconds() / 3600.0
            w, eta = self.draw_w(), math.sqrt(self.efficiency)
            delta = w * hours / 1000.0 * (eta if w > 0 else 1.0 / eta)
            self.soc_kwh = min(max(self.soc_kwh + delta, 0.0), self.capacity_kwh)
        self._since = now if self._since is None or now > self._since else self._since


@dataclass
class SwitchBoard:
    """The relays of a set of devices: commanded state, pending schedules, and what the relay lets
    through; batteries draw their setpoint, EVs at most their limit. Pure (the caller passes the
    time), so a simulator and tests share it.

    ``stuck`` devices model a welded relay or a device that ignores us: they acknowledge but
    keep drawing what they would anyway, which is what the effect checks must catch.
    """

    devices: dict[tuple[str, str], DeviceKind]
    off_power_w: float = 0.0
    stuck: frozenset[tuple[str, str]] = frozenset()
    batteries: dict[tuple[str, str], BatteryModel] = field(default_factory=dict)
    _off: set[tuple[str, str]] = field(default_factory=set)
    _limits: dict[tuple[str, str], float] = field(default_factory=dict)
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
        if cmd.battery_w is not None and key not in self.batteries:
            return self._ack(key, cmd, AckStatus.REJECTED, current, now,
                             f"{device_id} takes no battery setpoint" + (
                                 " (it reports power but is not controllable)" if kind is DeviceKind.BATTERY else ""))
        if cmd.limit_w is not None and kind is not DeviceKind.EV:
            return self._ack(key, cmd, AckStatus.REJECTED, current, now,
                             f"a {kind.value} takes no charge limit")
        if cmd.run_at is not None and cmd.run_at > now:
            self._pending.append((cmd.run_at, home_id, device_id, cmd))
            self._pending.sort(key=lambda p: p[0])
            return self._ack(key, cmd, AckStatus.SCHEDULED, current, now,
                             f"will {'switch' if cmd.kind == 'switch' else 'apply'} {cmd.describe()} "
                             f"at {_iso(cmd.run_at)}")
        return self._apply(key, cmd, now)

    def due(self, now: datetime) -> list[CommandAck]:
        """Run the scheduled commands whose time has come (and move batteries on to ``now``)."""
        acks = []
        while self._pending and self._pending[0][0] <= now:
            _, home_id, device_id, cmd = self._pending.pop(0)
            acks.append(self._apply((home_id, device_id), cmd, now))
        self.advance(now)
        return acks

    def advance(self, now: datetime) -> None:
        for key, battery in self.batteries.items():
            battery.advance(now, self._obeys(key))

    def state(self, home_id: str, device_id: str) -> CommandState:
        return CommandState.OFF if (home_id, device_id) in self._off else CommandState.ON

    def limit(self, home_id: str, device_id: str) -> float | None:
        return self._limits.get((home_id, device_id))

    def power(self, home_id: str, device_id: str, natural_w: float) -> float:
        """What the device draws given what it would draw uncommanded (a battery: nothing)."""
        key = (home_id, device_id)
        if key in self.stuck:
            return natural_w
        if key in self._off:
            return self.off_power_w
        if key in self.batteries:
            return self.batteries[key].draw_w()
        if key in self._limits:
            return min(natural_w, self._limits[key])
        return natural_w

    def _obeys(self, key: tuple[str, str]) -> bool:
        return key not in self.stuck and key not in self._off

    def _apply(self, key: tuple[str, str], cmd: SetCommand, now: datetime) -> CommandAck:
        battery = self.batteries.get(key)
        if battery is not None:
            battery.advance(now, self._obeys(key))  # the old setpoint held until now
        if cmd.state is CommandState.OFF:
            self._off.add(key)
        else:
            self._off.discard(key)
        if cmd.battery_w is not None and battery is not None:
            battery.setpoint_w = cmd.battery_w
        if cmd.limit_w is not None:
            self._limits[key] = cmd.limit_w
        return self._ack(key, cmd, AckStatus.APPLIED, cmd.state, now,
                         "" if cmd.kind == "switch" else cmd.describe())

    @staticmethod
    def _ack(key: tuple[str, str], cmd: SetCommand, status: AckStatus, state: CommandState,
             now: datetime, message: str) -> CommandAck:
        return CommandAck(key[0], key[1], cmd.command_id, status, state, now, now, message)
