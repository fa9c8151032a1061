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

from pipeline.ingest.decode.common import DecodeError, number, obj, parse_iso, shown
from pipeline.ingest.decode.units import kwh_to_wh
from pipeline.ingest.registry import Registry
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


def decode_tasmota(topic_id: str, data: object, received_at: datetime, registry: Registry,
                   dead: Callable[[str, DeadLetterCode], DeadLetter]) -> list[Reading | DeadLetter]:
    body = obj(data, "Tasmota SENSOR payload")
    energy = body.get("ENERGY")
    first = registry.lookup(Source.TASMOTA, topic_id, 0) or registry.lookup(Source.TASMOTA, topic_id, None)
    if energy is None:
        if first is None:
            raise DecodeError(f"unregistered tasmota device {topic_id}: add it to the registry",
                              DeadLetterCode.UNREGISTERED_DEVICE)
        return []  # a sensor without an energy monitor: nothing to measure
    energy = obj(energy, "ENERGY")
    power = energy.get("Power")
    if power is None:
        raise DecodeError("missing field ENERGY.Power", DeadLetterCode.MISSING_FIELD)
    tz = ZoneInfo(first.timezone) if first else timezone.utc
    ts = received_at
    if body.get("Time") is not None:
        if not isinstance(body["Time"], str):
            raise DecodeError(f"Time is not ISO 8601: {shown(body['Time'])}",
                              DeadLetterCode.BAD_TIMESTAMP)
        ts = parse_iso(body["Time"], "Time", tz)
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
