"""Shelly Gen2/Gen3 (RPC over MQTT).

* ``<id>/events/rpc``: ``{"method": "NotifyStatus", "params": {"ts": <epoch s>, "switch:0": {...}}}``.
  A ``NotifyStatus`` carries only the fields that changed, so it is merged onto the last full
  status of that component (``NotifyFullStatus`` and status frames supply full ones).
* ``<id>/status/<component>``: the component's full status; it has no time stamp, so the time of
  receipt is used.

Components: ``switch:N``, ``pm1:N``, ``cover:N`` (a 2PM in cover mode), ``light:N``, ``rgb:N``,
``rgbw:N`` and ``cct:N`` (a Pro RGBWW PM in its CCT profile) (``apower`` W, ``aenergy.total`` Wh, ``voltage``, ``current``); ``em1:N``
(``act_power``, with its counter ``total_act_energy`` Wh in ``em1data:N``: Pro EM, Pro EM-50, EM
Gen3, a Pro 3EM in its monophase profile); ``em:N`` (a three-phase meter such as the Pro 3EM:
``total_act_power``, with its counter ``total_act`` Wh in ``emdata:N``). Channel N picks the
registry entry.

Three-phase meters are stored as their total: one device, the sum of the phases'
power and energy (what a home's meter and its bill count); the reading's voltage and current
are phase A's. The per-phase ``a_``/``b_``/``c_`` values are not stored.

Components that carry no measurement (``sys``, ``wifi``, ``mqtt``, ``ble``, ``cloud``, ``eth``,
``input:N``, ``temperature:N``, ...) yield nothing. A component this decoder does not know that
does carry power or energy (a field named ``*power*`` or ``*energy*``) is dead-lettered
(``unsupported_measurement``), never dropped without a trace; the other components of the same
message are still read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, number, obj, parse_ts, shown
from pipeline.ingest.registry import SHELLY_METERED, Registry
from pipeline.reasons import DeadLetterCode
from pipeline.records import DeadLetter, Reading, Source

_POWER_FIELD = {"switch": "apower", "pm1": "apower", "cover": "apower", "light": "apower",
                "rgb": "apower", "rgbw": "apower", "cct": "apower", "em1": "act_power", "em": "total_act_power"}
assert tuple(_POWER_FIELD) == SHELLY_METERED  # what a registry entry's `component` may name
_ENERGY_COMPONENT = {"em": "emdata", "em1": "em1data"}
_ENERGY_FIELD = {"emdata": "total_act", "em1data": "total_act_energy"}
# Only the components and fields the readings are made of are kept between messages: the state
# of a device stays a few small dicts whatever it sends (other components: sys, wifi, input, ...
# carry no measurement).
_TRACKED = frozenset(_POWER_FIELD) | frozenset(_ENERGY_COMPONENT.values())
_KEPT_FIELDS = frozenset({"apower", "act_power", "total_act_power", "voltage", "current",
                          "a_voltage", "a_current", "total_act", "total_act_energy"})
_MAX_CHANNEL = 255  # Shelly devices have at most a handful of channels


def _split(component: str) -> tuple[str, int] | None:
    name, _, index = component.partition(":")
    # ASCII digits only: str.isdigit also accepts e.g. "²", which int() refuses.
    if not (0 < len(index) <= 3 and index.isascii() and index.isdigit()):
        return None
    return name, int(index)


def _tracked(component: str) -> bool:
    parts = _split(component)
    return parts is not None and parts[0] in _TRACKED and parts[1] <= _MAX_CHANNEL


def _metering(update: object) -> str | None:
    """The first field that looks like power or energy, in a component this decoder skips."""
    if not isinstance(update, dict):
        return None
    return next((str(k) for k in update if "power" in str(k) or "energy" in str(k)), None)


def _unsupported(component: str, field: str) -> tuple[str, DeadLetterCode]:
    return (f"Shelly component {shown(component)} carries {shown(field)} but is not one this "
            f"decoder reads ({', '.join(SHELLY_METERED)})",
            DeadLetterCode.UNSUPPORTED_MEASUREMENT)


def _measured(value: object, where: str) -> bool:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise DecodeError(f"{where} must be a number, got {shown(value)}")
    return True


def _kept(component: str, update: dict) -> dict:
    """The measured fields of a status or update, checked before they reach the state, so a bad
    frame is refused whole and cannot poison the state for the frames after it."""
    out: dict = {}
    for key, value in update.items():
        if key in _KEPT_FIELDS and _measured(value, f"{component}.{key}"):
            out[key] = value
        elif key == "aenergy":
            energy = obj(value, f"{component}.aenergy")
            if "total" in energy and _measured(energy["total"], f"{component}.aenergy.total"):
                out[key] = {"total": energy["total"]}
            else:
                out[key] = {}
    return out


def _merge(base: dict, update: dict) -> dict:
    """A NotifyStatus carries only what changed: merged one level into ``aenergy``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class ShellyDecoder:
    """State per Shelly device: the last full status of each component."""

    def __init__(self) -> None:
        self.components: dict[str, dict] = {}

    def _reading(self, shelly_id: str, component: str, ts: datetime, registry: Registry) -> Reading | None:
        parts = _split(component)
        if parts is None or parts[0] not in _POWER_FIELD:
            return None
        name, channel = parts
        status = self.components.get(component, {})
        power = number(status, _POWER_FIELD[name], path=f"{component}.")
        if power is None:
            return None
        entry = registry.lookup(Source.SHELLY, shelly_id, channel, name)
        if entry is None:
            raise DecodeError(f"unregistered shelly device {shelly_id} channel {channel}: "
                              f"add it to the registry", DeadLetterCode.UNREGISTERED_DEVICE)
        beside = self._metered_beside(name, channel) if entry.component is None else None
        if beside is not None:
            # Read into one device, the two would take turns: alternating powers and a counter
            # that jumps between two totals (read as resets).
            raise DecodeError(f"shelly device {shelly_id}: {component} and {beside} share channel {channel} and "
                              f"its registry entry ({entry.device_id}) names no component: give each its own "
                              f"[[device]] with component = \"{name}\" or \"{beside.split(':')[0]}\"",
                              DeadLetterCode.UNREGISTERED_DEVICE)
        if name in _ENERGY_COMPONENT:
            energy_name = _ENERGY_COMPONENT[name]
            data = self.components.get(f"{energy_name}:{channel}", {})
            energy = number(data, _ENERGY_FIELD[energy_name], path=f"{energy_name}:{channel}.")
        else:
            energy = number(obj(status.get("aenergy", {}), f"{component}.aenergy"), "total",
                            path=f"{component}.aenergy.")
        voltage_field, current_field = ("a_voltage", "a_current") if name == "em" else ("voltage", "current")
        return Reading(
            home_id=entry.home_id,
            device_id=entry.device_id,
            ts=ts,
            power_w=power,
            energy_wh=energy,
            voltage_v=number(status, voltage_field, path=f"{component}."),
            current_a=number(status, current_field, path=f"{component}."),
            kind=entry.kind,
            source=Source.SHELLY,
        )

    def _metered_beside(self, name: str, channel: int) -> str | None:
        """Another component of this device with a power reading and the same number, if any."""
        for other in self.components:
            parts = _split(other)
            if (parts is not None and parts[1] == channel and parts[0] != name and parts[0] in _POWER_FIELD
                    and isinstance(self.components[other].get(_POWER_FIELD[parts[0]]), (int, float))):
                return other
        return None

    def _readings(self, shelly_id: str, components: list[str], ts: datetime, registry: Registry,
                  dead: Callable[[str, DeadLetterCode], DeadLetter]) -> list[Reading | DeadLetter]:
        """One reading per component; a component that cannot be one is dead-lettered alone, so
        the device's other components are still read."""
        out: list[Reading | DeadLetter] = []
        for component in components:
            try:
                reading = self._reading(shelly_id, component, ts, registry)
            except DecodeError as exc:
                out.append(dead(str(exc), exc.code))
            else:
                if reading is not None:
                    out.append(reading)
        return out

    def on_rpc(self, shelly_id: str, data: object, received_at: datetime, registry: Registry,
               dead: Callable[[str, DeadLetterCode], DeadLetter]) -> list[Reading | DeadLetter]:
        frame = obj(data, "Shelly RPC frame")
        method = frame.get("method")
        if method not in ("NotifyStatus", "NotifyFullStatus"):
            return []  # events, responses: nothing to measure
        params = obj(frame.get("params"), "params")
        ts = parse_ts(params.get("ts"), received_at, "params.ts")
        out: list[Reading | DeadLetter] = []
        for component, update in params.items():
            if component != "ts" and not _tracked(component) and (field := _metering(update)):
                out.append(dead(*_unsupported(component, field)))
        updates = {component: _kept(component, obj(update, component))
                   for component, update in params.items() if _tracked(component)}
        for component, update in updates.items():
            if method == "NotifyFullStatus":
                self.components[component] = update
            else:
                self.components[component] = _merge(self.components.get(component, {}), update)
        touched = list(updates)
        # An energy-only update (emdata) still yields a reading of its meter.
        for component in list(touched):
            parts = _split(component)
            assert parts is not None  # only _tracked components are kept, and they split
            name, channel = parts
            for power_name, energy_name in _ENERGY_COMPONENT.items():
                if name == energy_name and f"{power_name}:{channel}" not in touched:
                    touched.append(f"{power_name}:{channel}")
        return out + self._readings(shelly_id, touched, ts, registry, dead)

    def on_status(self, shelly_id: str, component: str, data: object, received_at: datetime,
                  registry: Registry) -> list[Reading]:
        if not _tracked(component):
            field = _metering(data)
            if field is not None:
                raise DecodeError(*_unsupported(component, field))
            return []  # sys, wifi, cloud, input, ...: no measurements
        self.components[component] = _kept(component, obj(data, f"{component} status"))
        reading = self._reading(shelly_id, component, received_at, registry)
        return [reading] if reading else []
