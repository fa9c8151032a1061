"""The bounds a message and a reading must respect (see ValidationSettings for the defaults and
why). A violation is a dead letter with its code and this sentence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from pipeline.reasons import DeadLetterCode
from pipeline.records import Reading
from pipeline.settings import ValidationSettings

# MQTT's level separator and wildcards: an id holding one could not be subscribed to alone.
_FORBIDDEN_IN_ID = frozenset("/+#")


@dataclass(frozen=True, slots=True)
class Violation:
    code: DeadLetterCode
    reason: str


def check_id(value: str, what: str, settings: ValidationSettings) -> Violation | None:
    """None when ``value`` may be a home, device or vendor id."""
    if not value:
        return Violation(DeadLetterCode.BAD_ID, f"{what} is empty")
    if len(value) > settings.max_id_chars:
        return Violation(DeadLetterCode.BAD_ID, f"{what} is {len(value)} characters long "
                                                f"(limit {settings.max_id_chars})")
    if not value.isprintable() or not _FORBIDDEN_IN_ID.isdisjoint(value):
        bad = next(c for c in value if not c.isprintable() or c in _FORBIDDEN_IN_ID)
        return Violation(DeadLetterCode.BAD_ID, f"{what} {value!r} holds the character "
                                                f"U+{ord(bad):04X}, not allowed in an id")
    return None


def check_ts(ts: datetime, received_at: datetime, settings: ValidationSettings,
             field: str = "ts") -> Violation | None:
    if ts.tzinfo is None:
        return Violation(DeadLetterCode.BAD_TIMESTAMP, f"{field} has no time zone")
    if ts < settings.min_ts:
        return Violation(DeadLetterCode.TIMESTAMP_TOO_OLD,
                         f"{field} {ts.isoformat()} is before the earliest accepted time "
                         f"{settings.min_ts.isoformat()}")
    ahead = (ts - received_at).total_seconds()
    if ahead > settings.max_future_s:
        return Violation(DeadLetterCode.TIMESTAMP_IN_FUTURE,
                         f"{field} {ts.isoformat()} is {ahead:.0f} s in the future "
                         f"(limit {settings.max_future_s:g} s)")
    return None


@lru_cache(maxsize=16)  # per reading otherwise: the decode step is hot
def _bounds(settings: ValidationSettings) -> dict[str, tuple[float, float, str]]:
    return {
        "power_w": (settings.min_power_w, settings.max_power_w, "W"),
        "energy_wh": (0.0, settings.max_energy_wh, "Wh"),
        "voltage_v": (settings.min_voltage_v, settings.max_voltage_v, "V"),
        "current_a": (settings.min_current_a, settings.max_current_a, "A"),
    }


def check_reading(reading: Reading, received_at: datetime,
                  settings: ValidationSettings, ids_checked: bool = False) -> Violation | None:
    """None when the reading is acceptable, else what is wrong with it. ``ids_checked``: the
    caller has checked these very ids already (a native topic's, before the parse)."""
    ids = () if ids_checked else (("home_id", reading.home_id), ("device_id", reading.device_id))
    for what, value in ids:
        violation = check_id(value, what, settings) if isinstance(value, str) else Violation(
            DeadLetterCode.BAD_ID, f"{what} is not text")
        if violation is not None:
            return violation
    if not isinstance(reading.ts, datetime):
        return Violation(DeadLetterCode.BAD_TIMESTAMP, "ts is not a time")
    for name, (low, high, unit) in _bounds(settings).items():
        value = getattr(reading, name)
        if value is None and name != "power_w":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Violation(DeadLetterCode.INVALID_PAYLOAD,
                             f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            return Violation(DeadLetterCode.NOT_FINITE, f"{name} is not a finite number: {value!r}")
        if not low <= value <= high:
            if name == "energy_wh" and value < 0:
                reason = f"energy_wh {value:g} is negative (a counter cannot be)"
            else:
                reason = f"{name} {value:g} is outside the bounds [{low:g}, {high:g}] {unit}"
            return Violation(DeadLetterCode.OUT_OF_BOUNDS, reason)
    return check_ts(reading.ts, received_at, settings)


def validate(reading: Reading, received_at: datetime, settings: ValidationSettings) -> str | None:
    """None when the reading is acceptable, else a sentence saying what is wrong (the code is in
    :func:`check_reading`)."""
    violation = check_reading(reading, received_at, settings)
    return None if violation is None else violation.reason
