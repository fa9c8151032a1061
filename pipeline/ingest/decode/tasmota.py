"""Tasmota ``tele/<topic>/SENSOR`` telemetry.

``{"Time": "2024-03-06T12:00:00", "ENERGY": {"Total": kWh, "Power": W, "Voltage": V,
"Current": A, ...}}``. ``Time`` is the device's local clock with no offset: the registry's time
zone for the device converts it (an ambiguous hour in autumn resolves to its first occurrence).
Multi-channel devices send arrays (``"Power": [1688, 0]``): one reading per channel, channel i
being registry channel i. A scalar ``Total`` beside array powers cannot be split between
channels, so those readings carry no counter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from pipeline.ingest.decode.common import DecodeError, metering_field, number, obj, parse_iso, shown
from pipeline.ingest.decode.units import kwh_to_wh
from pipeline.ingest.registry import Registry, RegistryEntry
from pipeline.reasons import DeadLetterCode
from pipeline.records import DeadLetter, Reading, Source

# Tasmota's energy drivers report at most 8 phases/channels; more is not a device's frame (and
# must not fan out into one dead letter per array element).
_MAX_CHANNELS = 8


def _channel(values: dict, field: str, i: int | None) -> float | None:
    value = values.get(field)
    if isinstance(value, list):
        if i is None or i >= len(value):
            return None
        return number({field: value[i]}, field, path=f"ENERGY.{field}[{i}] as ")
    if i not in (None, 0) and field == "Total":
        return None
    return number(values, field, path="ENERGY.")


def _at_path(body: dict, path: str) -> object:
    value: object = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _metering(body: dict) -> str | None:
    """The first number one level down whose name says power or energy (``SML.Power_curr``,
    ``MT681.Total_in``), as a dotted path."""
    for sensor, values in body.items():
        if isinstance(values, dict) and (key := metering_field(values, starts=("total",))) is not None:
            return f"{sensor}.{key}"
    return None


def _time(body: dict, received_at: datetime, tz: ZoneInfo | timezone) -> datetime:
    if body.get("Time") is None:
        return received_at
    if not isinstance(body["Time"], str):
        raise DecodeError(f"Time is not ISO 8601: {shown(body['Time'])}", DeadLetterCode.BAD_TIMESTAMP)
    return parse_iso(body["Time"], "Time", tz)


def _mapped_reading(entry: RegistryEntry, body: dict, received_at: datetime) -> Reading:
    """A reading from the registry's ``power_path``/``energy_path`` (a SENSOR with no ENERGY)."""
    assert entry.power_path is not None
    watts = number({entry.power_path: _at_path(body, entry.power_path)}, entry.power_path, required=True)
    total = (number({entry.energy_path: _at_path(body, entry.energy_path)}, entry.energy_path)
             if entry.energy_path is not None else None)
    return Reading(
        home_id=entry.home_id,
        device_id=entry.device_id,
        ts=_time(body, received_at, ZoneInfo(entry.timezone)),
        power_w=watts,
        energy_wh=kwh_to_wh(total) if total is not None else None,
        kind=entry.kind,
        source=Source.TASMOTA,
    )


def decode_tasmota(topic_id: str, data: object, received_at: datetime, registry: Registry,
                   dead: Callable[[str, DeadLetterCode], DeadLetter]) -> list[Reading | DeadLetter]:
    body = obj(data, "Tasmota SENSOR payload")
    energy = body.get("ENERGY")
    first = registry.lookup(Source.TASMOTA, topic_id, 0) or registry.lookup(Source.TASMOTA, topic_id, None)
    if energy is None:
        if first is None:
            raise DecodeError(f"unregistered tasmota device {topic_id}: add it to the registry",
                              DeadLetterCode.UNREGISTERED_DEVICE)
        if first.power_path is not None:
            return [_mapped_reading(first, body, received_at)]
        field = _metering(body)
        if field is not None:
            # A smart-meter reader's script names its values itself: say where to map them
            # rather than drop a meter's readings without a trace.
            raise DecodeError(f"tasmota device {topic_id} reports {shown(field)} but no ENERGY: set "
                              f"power_path (and energy_path) in its registry entry to read it",
                              DeadLetterCode.UNSUPPORTED_MEASUREMENT)
        return []  # a sensor without an energy monitor: nothing to measure
    energy = obj(energy, "ENERGY")
    power = energy.get("Power")
    if power is None:
        raise DecodeError("missing field ENERGY.Power", DeadLetterCode.MISSING_FIELD)
    ts = _time(body, received_at, ZoneInfo(first.timezone) if first else timezone.utc)
    if isinstance(power, list) and not 0 < len(power) <= _MAX_CHANNELS:
        raise DecodeError(f"ENERGY.Power has {len(power)} channels, expected 1 to {_MAX_CHANNELS}")
    channels = list(range(len(power))) if isinstance(power, list) else [None]
    if not any(registry.lookup(Source.TASMOTA, topic_id, i) for i in channels):
        # One dead letter for the message, not one per channel of an unknown device.
        raise DecodeError(f"unregistered tasmota device {topic_id}: add it to the registry",
                          DeadLetterCode.UNREGISTERED_DEVICE)
    total_is_array = isinstance(energy.get("Total"), list)
    out: list[Reading | DeadLetter] = []
    for i in channels:
        entry = registry.lookup(Source.TASMOTA, topic_id, i)
        if entry is None:
            label = f" channel {i}" if i is not None else ""
            out.append(dead(f"unregistered tasmota device {topic_id}{label}: "
                            f"add it to the registry", DeadLetterCode.UNREGISTERED_DEVICE))
            continue
        watts = _channel(energy, "Power", i)
        if watts is None:
            label = f"[{i}]" if i is not None else ""
            out.append(dead(f"missing field ENERGY.Power{label}", DeadLetterCode.MISSING_FIELD))
            continue
        total = _channel(energy, "Total", i) if (total_is_array or i is None) else None
        out.append(Reading(
            home_id=entry.home_id,
            device_id=entry.device_id,
            ts=ts,
            power_w=watts,
            energy_wh=kwh_to_wh(total) if total is not None else None,
            voltage_v=_channel(energy, "Voltage", i),
            current_a=_channel(energy, "Current", i),
            kind=entry.kind,
            source=Source.TASMOTA,
        ))
    return out
