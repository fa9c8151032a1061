"""Helpers shared by the vendor decoders: typed field access with precise error sentences."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


class DecodeError(Exception):
    """A payload that cannot become a reading; the message is the dead-letter reason."""


def number(obj: dict, field: str, *, required: bool = False, path: str = "") -> float | None:
    name = f"{path}{field}"
    value = obj.get(field)
    if value is None:
        if required:
            raise DecodeError(f"missing field {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{name} must be a number, got {value!r}")
    return float(value)


def obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_ts(value: Any, received_at: datetime, field: str = "ts") -> datetime:
    """ISO 8601 (naive means UTC), or epoch seconds, or epoch milliseconds (> 1e11)."""
    if value is None:
        return received_at
    if isinstance(value, bool):
        raise DecodeError(f"{field} must be ISO 8601 or epoch seconds/milliseconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise DecodeError(f"{field} {value!r} is not a valid epoch time") from None
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"{field} is not ISO 8601 or epoch seconds/milliseconds: {value!r}") from None
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    raise DecodeError(f"{field} must be ISO 8601 or epoch seconds/milliseconds, got {value!r}")
