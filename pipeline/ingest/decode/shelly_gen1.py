"""Shelly Gen1 (Shelly 1PM, Plug S, 2.5, EM, 3EM, ...): one number a message.

* ``shellies/<id>/relay/<N>/power``: W; ``.../relay/<N>/energy``: a counter in watt-minutes
  (since the device last restarted), stored as Wh (÷ 60).
* ``shellies/<id>/emeter/<N>/power`` W, ``voltage`` V, ``current`` A, ``total`` Wh (kept across
  restarts, so it is the counter stored), ``energy`` watt-minutes (used, ÷ 60, only until a
  ``total`` arrives). ``returned_energy``, ``total_returned`` (export), ``reactive_power`` and
  ``pf`` are recognised and not stored: a reading has no field for them.

A device publishes these together every report period (30 s by default), ``power`` first: each
value is kept per channel and a ``power`` message makes the reading, carrying the last counter,
voltage and current seen. The 3EM's three phases are ``emeter/0..2``: each phase is a channel,
registered as a device of its own (or only the phases a home wants). Times are those of receipt
(the topics carry none).
"""

from __future__ import annotations

from datetime import datetime

from pipeline.ingest.decode.common import DecodeError, shown
from pipeline.ingest.registry import Registry
from pipeline.reasons import DeadLetterCode
from pipeline.records import Reading, Source

_RELAY_FIELDS = frozenset({"power", "energy"})
_EMETER_FIELDS = frozenset({"power", "energy", "total", "voltage", "current", "returned_energy",
                            "total_returned", "reactive_power", "pf"})
_KEPT = frozenset({"energy", "total", "voltage", "current"})
_MAX_CHANNEL = 15  # Gen1 devices have at most 4 relays or 3 meters


class ShellyGen1Decoder:
    """State per Gen1 device: the last counter, voltage and current of each channel."""

    def __init__(self) -> None:
        self.channels: dict[tuple[str, int], dict[str, float]] = {}

    def on_value(self, shelly_id: str, group: str, index: str, field: str, data: object,
                 received_at: datetime, registry: Registry) -> list[Reading]:
        known = _RELAY_FIELDS if group == "relay" else _EMETER_FIELDS
        if field not in known:
            raise DecodeError(f"Shelly Gen1 {group}/{index}/{field} is not a measurement this "
                              f"decoder knows", DeadLetterCode.UNSUPPORTED_MEASUREMENT)
        if not (index.isascii() and index.isdigit() and len(index) <= 2 and int(index) <= _MAX_CHANNEL):
            raise DecodeError(f"Shelly Gen1 channel {shown(index)} is not a number from 0 to {_MAX_CHANNEL}")
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise DecodeError(f"{group}/{index}/{field} must be a number, got {shown(data)}")
        value = float(data)
        channel = int(index)
        values = self.channels.setdefault((group, channel), {})
        if field in _KEPT:
            values[field] = value
        if field != "power":
            return []
        entry = registry.lookup(Source.SHELLY, shelly_id, channel)
        if entry is None:
            raise DecodeError(f"unregistered shelly device {shelly_id} channel {channel}: "
                              f"add it to the registry", DeadLetterCode.UNREGISTERED_DEVICE)
        if "total" in values:
            energy: float | None = values["total"]
        elif "energy" in values:
            energy = values["energy"] / 60.0  # watt-minutes
        else:
            energy = None
        return [Reading(
            home_id=entry.home_id,
            device_id=entry.device_id,
            ts=received_at,
            power_w=value,
            energy_wh=energy,
            voltage_v=values.get("voltage"),
            current_a=values.get("current"),
            kind=entry.kind,
            source=Source.SHELLY,
        )]
