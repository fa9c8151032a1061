"""Zigbee2MQTT device state on ``<base topic>/<friendly name>``: ``power`` W, ``energy`` kWh,
``voltage`` V, ``current`` A, and ``last_seen`` (ISO 8601 or epoch ms, per Zigbee2MQTT's
``last_seen`` setting) as the time stamp when present.

A Zigbee network carries many devices that measure no power (sensors, lights): their messages are
not errors and yield nothing. A device that does report power but is not in the registry is
dead-lettered, and so is a registered device's message with no ``power`` but a number named like
power or energy (``power_a`` of a three-phase meter), so no measurement is silently dropped. Which topics are states, attributes or
commands is decided by the topic router (pipeline.ingest.decode.topics).
"""

from __future__ import annotations

from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, metering_field, number, obj, parse_ts, shown
from pipeline.ingest.decode.units import kwh_to_wh
from pipeline.ingest.registry import Registry
from pipeline.reasons import DeadLetterCode
from pipeline.records import Reading, Source

# Numbers with "power" in their name that measure nothing (Aqara's count of outages).
_NOT_MEASUREMENTS = frozenset({"power_outage_count"})


def decode_zigbee2mqtt(name: str, data: object, received_at: datetime, registry: Registry,
                       maybe_attribute: bool = False) -> list[Reading]:
    """``maybe_attribute``: the topic may be an attribute of an unregistered device (a name with
    a ``/`` the registry does not know), so a value that is not a JSON object is no error."""
    if name == "bridge" or (maybe_attribute and not isinstance(data, dict)):
        return []
    body = obj(data, "Zigbee2MQTT state")
    power = number(body, "power")
    if power is None:
        field = metering_field(body, exclude=_NOT_MEASUREMENTS)
        if field is not None and registry.lookup(Source.ZIGBEE2MQTT, name, None) is not None:
            # A registered meter that names its power otherwise (per phase, say): its readings
            # would be lost in silence.
            raise DecodeError(f"zigbee2mqtt device {name} reports {shown(field)} but no power: "
                              f"this decoder reads power, energy, voltage and current",
                              DeadLetterCode.UNSUPPORTED_MEASUREMENT)
        return []
    entry = registry.lookup(Source.ZIGBEE2MQTT, name, None)
    if entry is None:
        raise DecodeError(f"unregistered zigbee2mqtt device {name}: add it to the registry",
                          DeadLetterCode.UNREGISTERED_DEVICE)
    energy = number(body, "energy")
    return [Reading(
        home_id=entry.home_id,
        device_id=entry.device_id,
        ts=parse_ts(body.get("last_seen"), received_at, "last_seen"),
        power_w=power,
        energy_wh=kwh_to_wh(energy) if energy is not None else None,
        voltage_v=number(body, "voltage"),
        current_a=number(body, "current"),
        kind=entry.kind,
        source=Source.ZIGBEE2MQTT,
    )]
