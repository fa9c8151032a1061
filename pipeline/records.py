"""The typed records that travel through the pipeline.

Everything that crosses a module boundary is one of these frozen dataclasses: no dicts of dicts.
Timestamps are always timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class DeviceKind(str, Enum):
    """What a device measures; decides how a home's total is formed."""

    METER = "meter"  # whole-house (grid) meter: the home's total when present
    APPLIANCE = "appliance"  # a sub-load behind the meter
    PV = "pv"
    BATTERY = "battery"
    EV = "ev"


class Source(str, Enum):
    """The payload format a reading arrived in."""

    NATIVE = "native"
    SHELLY = "shelly"
    TASMOTA = "tasmota"
    ZIGBEE2MQTT = "zigbee2mqtt"
    IMPORT = "import"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as the source received it, before any decoding."""

    topic: str  # with the deployment's topic prefix already stripped
    payload: bytes
    received_at: datetime  # broker-side arrival at our client, UTC


@dataclass(frozen=True, slots=True)
class Reading:
    """One instantaneous measurement of one device.

    ``power_w`` is signed: negative means export (PV, battery discharge to grid).
    ``energy_wh`` is the device's cumulative counter, already normalised to Wh; ``None`` when the
    device has no counter.
    """

    home_id: str
    device_id: str
    ts: datetime
    power_w: float
    energy_wh: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    kind: DeviceKind = DeviceKind.APPLIANCE
    source: Source = Source.NATIVE


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not become a reading, kept with the reason and the raw payload."""

    received_at: datetime
    topic: str
    payload: str  # decoded as UTF-8 with replacement, so any byte string can be stored
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceWindow:
    """The 1-minute aggregate of one device; ``bucket`` is the window start (UTC)."""

    home_id: str
    device_id: str
    kind: DeviceKind
    bucket: datetime
    mean_power_w: float
    min_power_w: float
    max_power_w: float
    energy_wh: float
    samples: int


@dataclass(frozen=True, slots=True)
class HomeWindow:
    """The 1-minute aggregate of a home's total; ``bucket`` is the window start (UTC)."""

    home_id: str
    bucket: datetime
    mean_power_w: float
    min_power_w: float
    max_power_w: float
    energy_wh: float
    samples: int


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A row of the ``devices`` table: what the registry or first sight tells about a device."""

    home_id: str
    device_id: str
    kind: DeviceKind
    source: Source
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    vendor_id: str | None = None  # the vendor's topic id (Shelly id, Tasmota topic, Z2M name)
    channel: int | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class LateReading:
    """A reading that arrived after its window closed: stored raw, left out of the aggregate."""

    reading: Reading
    bucket: datetime  # the window it belonged to


@dataclass(frozen=True, slots=True)
class Tick:
    """Emitted by sources on a wall-clock cadence so time-based batching works when input is idle."""

    at: datetime
    partition: int = 0  # the source partition that emitted it, to reach the matching sink partition
