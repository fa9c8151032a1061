"""The typed records that travel through the pipeline.

Everything that crosses a module boundary is one of these frozen dataclasses: no dicts of dicts.
Timestamps are always timezone-aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
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


# A dead letter keeps a bounded prefix of what it was given: a hostile device may send megabytes,
# and the dead-letter table must accept anything without growing without limit. The length and
# SHA-256 of the whole original identify it.
DEAD_LETTER_PAYLOAD_MAX = 4096  # characters of payload kept
DEAD_LETTER_TOPIC_MAX = 512  # characters of topic kept (PostgreSQL must be able to index it)
DEAD_LETTER_REASON_MAX = 1000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\u2026"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message or record that could not go on, kept with the reason and (a prefix of) the raw
    payload. Build one with :meth:`of`, which applies the bounds and fills length and hash.

    ``step`` names where it was stopped (``decode``, ``validate``, ``windowing``, ``home_total``,
    ``insights``, ``sink``, ``import``); ``error`` is a short code or the exception's class name.
    """

    received_at: datetime
    topic: str
    payload: str  # a prefix, decoded as UTF-8 with replacement, so any byte string can be stored
    reason: str
    step: str = "decode"
    error: str = ""
    payload_bytes: int = -1  # length of the whole original payload in bytes; -1 when not known
    payload_sha256: str = ""  # of the whole original payload; "" when not known

    @classmethod
    def of(cls, received_at: datetime, topic: str, payload: bytes | str, reason: str, *,
           step: str = "decode", error: str = "") -> DeadLetter:
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8", "replace")
        head = raw[: DEAD_LETTER_PAYLOAD_MAX * 4].decode("utf-8", "replace")
        return cls(
            received_at=received_at,
            topic=_clip(topic, DEAD_LETTER_TOPIC_MAX),
            payload=_clip(head, DEAD_LETTER_PAYLOAD_MAX),
            reason=_clip(reason, DEAD_LETTER_REASON_MAX),
            step=step,
            error=error,
            payload_bytes=len(raw),
            payload_sha256=hashlib.sha256(raw).hexdigest(),
        )


@dataclass(frozen=True, slots=True)
class DeviceWindow:
    """The 1-minute aggregate of one device; ``bucket`` is the window start (UTC).

    ``counter_resets`` counts the energy-counter resets the windower judged in this window (a
    one-sample glitch is not a reset); it is not stored, and windows read back from a store have 0.
    """

    home_id: str
    device_id: str
    kind: DeviceKind
    bucket: datetime
    mean_power_w: float
    min_power_w: float
    max_power_w: float
    energy_wh: float
    samples: int
    counter_resets: int = 0


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
class TariffRow:
    """One entry of a tariff history, as the tariffs table stores it and
    ``pipeline.energy.tariff.TariffBook`` reads and writes it; ``home_id == "*"`` is the default for every home."""

    home_id: str
    effective_from: datetime
    spec_json: str


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


# ---------------------------------------------------------------- insights (forecasts, anomalies,
# recommendations). Power values are mean power in W over a slot, so a forecast compares directly
# with the 1-minute and hourly aggregates; energy is W x hours.


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast mean power of a home over ``[target_ts, target_ts + resolution_min)``.

    ``made_at`` is the issue time (a slot boundary); ``horizon_min`` is how far the END of the
    target slot lies after ``made_at``: the next slot has ``horizon_min == resolution_min``, the
    last slot of a 24-hour forecast has 1440. ``lower_w``/``upper_w`` bound an 80 % interval.
    """

    home_id: str
    made_at: datetime
    target_ts: datetime
    resolution_min: int  # 15 or 60
    horizon_min: int
    yhat_w: float
    lower_w: float
    upper_w: float
    model: str


@dataclass(frozen=True, slots=True)
class ForecastScore:
    """Prequential (scored as actuals arrive) error of one home's forecasts at one horizon."""

    home_id: str
    resolution_min: int
    horizon_min: int
    model: str  # the model in use when last scored
    n: int  # scored forecasts
    mae_w: float
    naive_day_mae_w: float  # same slot yesterday
    naive_week_mae_w: float  # same slot last week
    coverage: float  # share of actuals inside [lower_w, upper_w]
    updated_at: datetime


class AnomalyKind(str, Enum):
    HIGH_CONSUMPTION = "high_consumption"  # far above the learned profile for this time of day
    LONG_RUNNING = "long_running"  # on far longer than the device usually is
    DUTY_CYCLE_DRIFT = "duty_cycle_drift"  # a cycling device (fridge) whose duty cycle drifts
    FLAT_LINE = "flat_line"  # the same value for too long: a stuck sensor
    SILENT = "silent"  # a meter that stopped reporting
    COUNTER_BACKWARDS = "counter_backwards"  # an energy counter that went backwards (reset)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly of a device (or of a home's total, ``device_id == ""``).

    At most one is open per (home, device, kind): it is emitted when it opens and again, with
    ``ended_at`` set, when it clears; the store keys it by ``started_at``.
    """

    home_id: str
    device_id: str
    kind: AnomalyKind
    started_at: datetime
    ended_at: datetime | None
    score: float  # how far from normal, in the detector's own unit (documented per kind)
    message: str  # one sentence a homeowner understands


@dataclass(frozen=True, slots=True)
class Recommendation:
    """An energy-saving suggestion with its estimated monthly saving and how it was estimated.

    The store keys it by (home_id, kind, device_id): an equal one is never repeated while open,
    and its status (new / accepted / dismissed) belongs to the homeowner, not the generator.
    """

    home_id: str
    device_id: str  # "" when it concerns the whole home
    kind: str  # standby_waste, load_shift, peak_reduction, usage_increase, solar_self_consumption
    created_at: datetime
    title: str
    detail: str  # how the saving was estimated, in plain words with the numbers used
    kwh_per_month: float
    money_per_month: float
    currency: str


# ---------------------------------------------------------------- device control. The viewer
# publishes a command on shems/<home>/<device>/set; the device answers on .../ack, which the flow
# decodes into a CommandAck for the store.


class CommandState(str, Enum):
    ON = "on"
    OFF = "off"


class AckStatus(str, Enum):
    APPLIED = "applied"  # the device switched
    SCHEDULED = "scheduled"  # accepted for a later time (``run_at`` of the command)
    REJECTED = "rejected"  # the device refused (``message`` says why)


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A device's answer to a command; a scheduled command is acknowledged twice (scheduled, then
    applied when it runs), so the store keys acks by (command_id, status)."""

    home_id: str
    device_id: str
    command_id: str
    status: AckStatus
    state: CommandState  # the state the device reports after handling the command
    ts: datetime  # the device's time of the answer
    received_at: datetime
    message: str = ""


# ---------------------------------------------------------------- bills (pipeline.energy.bill)


class BudgetAlertKind(str, Enum):
    PROJECTED = "projected"  # the month is projected to cost more than the budget
    EXCEEDED = "exceeded"  # the month so far already costs more


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A home's month is over (or heading over) the homeowner's monthly budget.

    Made by ``pipeline.energy.bill.budget_alert``; one per (home_id, month, kind) is worth telling:
    a notifier keys repeats by that. Money is in ``currency``, tax included, export credit
    deducted; ``basis`` says what the projection came from (``pipeline.energy.bill.Basis``).
    """

    home_id: str
    month: str  # local calendar month, "2024-11"
    kind: BudgetAlertKind
    budget: float
    projected: float
    to_date: float
    currency: str
    basis: str
    created_at: datetime
    message: str  # one sentence a homeowner understands, money in their locale
