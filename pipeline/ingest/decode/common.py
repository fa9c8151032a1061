"""Helpers shared by the vendor decoders: typed field access with precise error sentences, and
time stamps that can never overflow."""

from __future__ import annotations

import math
from datetime import datetime, timezone, tzinfo
from typing import Any, Literal, overload

from pipeline.reasons import DeadLetterCode
from pipeline.settings import TS_CEILING, TS_FLOOR

_FLOOR_S = TS_FLOOR.timestamp()
_CEILING_S = TS_CEILING.timestamp()
# An ISO 8601 time with microseconds and offset is 32 characters; longer is not a time stamp.
_MAX_ISO_CHARS = 64


class DecodeError(Exception):
    """A payload that cannot become a reading; the message is the dead-letter reason and
    ``code`` its class (the dead letter's ``error``)."""

    def __init__(self, reason: str, code: DeadLetterCode = DeadLetterCode.INVALID_PAYLOAD) -> None:
        super().__init__(reason)
        self.code = code


def metering_field(values: dict, *, starts: tuple[str, ...] = (),
                   exclude: frozenset[str] = frozenset()) -> str | None:
    """The first key of ``values`` holding a number whose name (any case) says power or energy,
    or starts with one of ``starts``; ``exclude``: lower-case names that measure nothing. For a
    payload a decoder cannot read, to dead-letter it rather than drop a measurement."""
    for key, value in values.items():
        name = str(key).lower()
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and name not in exclude
                and ("power" in name or "energy" in name or name.startswith(starts))):
            return str(key)
    return None


@overload
def number(obj: dict, field: str, *, required: Literal[True], path: str = "") -> float: ...
@overload
def number(obj: dict, field: str, *, required: bool = False, path: str = "") -> float | None: ...
def number(obj: dict, field: str, *, required: bool = False, path: str = "") -> float | None:
    name = f"{path}{field}"
    value = obj.get(field)
    if value is None:
        if required:
            raise DecodeError(f"missing field {name}", DeadLetterCode.MISSING_FIELD)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{name} must be a number, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond a double (a JSON parser other than orjson may give one)
        raise DecodeError(f"{name} is too large for a number: {len(str(value))} digits",
                          DeadLetterCode.OUT_OF_BOUNDS) from None


def obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def shown(value: Any, limit: int = 80) -> str:
    """A value in a reason sentence: its repr, cut short (the dead letter keeps the payload)."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "\u2026"


def _outside(field: str, text: str, too_old: bool) -> DecodeError:
    if too_old:
        return DecodeError(f"{field} {text} is before {TS_FLOOR:%Y-%m-%d}, the earliest time read",
                           DeadLetterCode.TIMESTAMP_TOO_OLD)
    return DecodeError(f"{field} {text} is not before {TS_CEILING:%Y-%m-%d}, the limit of any time",
                       DeadLetterCode.TIMESTAMP_IN_FUTURE)


def to_utc(ts: datetime, field: str = "ts", local: tzinfo = timezone.utc) -> datetime:
    """An aware UTC time from a parsed one (naive means ``local``), refusing anything outside
    [TS_FLOOR, TS_CEILING) before converting, so the conversion cannot overflow."""
    # The year check comes first: any offset is under a day, so a year inside the bounds cannot
    # step outside datetime's range when converted.
    if not TS_FLOOR.year <= ts.year < TS_CEILING.year:
        raise _outside(field, shown(ts.isoformat()), ts.year < TS_FLOOR.year)
    aware = ts.replace(tzinfo=local) if ts.tzinfo is None else ts
    utc = aware if aware.tzinfo is timezone.utc else aware.astimezone(timezone.utc)
    if not TS_FLOOR <= utc < TS_CEILING:
        raise _outside(field, shown(ts.isoformat()), utc < TS_FLOOR)
    return utc


def parse_iso(value: str, field: str = "ts", local: tzinfo = timezone.utc) -> datetime:
    if len(value) > _MAX_ISO_CHARS:
        raise DecodeError(f"{field} is not ISO 8601: a string of {len(value)} characters",
                          DeadLetterCode.BAD_TIMESTAMP)
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"{field} is not ISO 8601 or epoch seconds/milliseconds: {shown(value)}",
                          DeadLetterCode.BAD_TIMESTAMP) from None
    return to_utc(ts, field, local)


def parse_ts(value: Any, received_at: datetime, field: str = "ts") -> datetime:
    """ISO 8601 (naive means UTC), or epoch seconds, or epoch milliseconds (> 1e11), within
    [TS_FLOOR, TS_CEILING); the configured bounds are checked by pipeline.ingest.validation."""
    if value is None:
        return received_at
    if isinstance(value, bool):
        raise DecodeError(f"{field} must be ISO 8601 or epoch seconds/milliseconds, got {value!r}",
                          DeadLetterCode.BAD_TIMESTAMP)
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf if value > 0 else -math.inf
        if not math.isfinite(seconds):
            raise DecodeError(f"{field} {shown(value)} is not a finite epoch time",
                              DeadLetterCode.BAD_TIMESTAMP)
        if abs(seconds) > 1e11:
            seconds /= 1000.0
        if not _FLOOR_S <= seconds < _CEILING_S:
            code = (DeadLetterCode.TIMESTAMP_TOO_OLD if seconds < _FLOOR_S
                    else DeadLetterCode.TIMESTAMP_IN_FUTURE)
            raise DecodeError(f"{field} {shown(value)} is outside [{TS_FLOOR:%Y-%m-%d}, "
                              f"{TS_CEILING:%Y-%m-%d}) as epoch seconds or milliseconds", code)
        return datetime.fromtimestamp(seconds, timezone.utc)
    if isinstance(value, str):
        return parse_iso(value, field)
    raise DecodeError(f"{field} must be ISO 8601 or epoch seconds/milliseconds, got {shown(value)}",
                      DeadLetterCode.BAD_TIMESTAMP)
