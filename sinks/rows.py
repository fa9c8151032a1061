"""Row helpers both stores share: timestamps as integer microseconds, payload hashes, and the
column values of the records whose rows are the same in either store. The viewer reads
timestamps through here too, so neither it nor one store imports the other store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pipeline.records import (
    DEAD_LETTER_PAYLOAD_MAX,
    DEAD_LETTER_REASON_MAX,
    DEAD_LETTER_TOPIC_MAX,
    DeadLetter,
    DeviceInfo,
)
from sinks.base import Batch

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def payload_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8", "replace")).hexdigest()


def dead_letter_hash(d: DeadLetter) -> str:
    """The SHA-256 of the whole original payload (the stored payload may be only its prefix)."""
    return d.payload_sha256 or payload_hash(d.payload)


def _storable(text: object, limit: int) -> str:
    """Any value as text of at most ``limit`` characters that UTF-8 can encode (a lone surrogate
    would make the driver refuse the whole row)."""
    text = text if isinstance(text, str) else repr(text)
    if len(text) > limit:
        text = text[:limit] + "\u2026"
    return text.encode("utf-8", "replace").decode("utf-8")


def dead_letter_row(d: DeadLetter, fix_text: Callable[[str], str] = lambda t: t) -> tuple:
    """A dead letter's column values, bounded again here: the table must accept whatever a dead
    letter holds, even one built without DeadLetter.of (its unique index has to fit the topic)."""
    return (d.received_at, fix_text(_storable(d.topic, DEAD_LETTER_TOPIC_MAX)),
            fix_text(_storable(d.payload, DEAD_LETTER_PAYLOAD_MAX)),
            fix_text(_storable(d.reason, DEAD_LETTER_REASON_MAX)), dead_letter_hash(d),
            fix_text(_storable(d.step, 40)), fix_text(_storable(d.error, 200)), int(d.payload_bytes))


def device_rows(batch: Batch) -> list[DeviceInfo]:
    """Registry entries of the batch plus one summary per device seen in its readings."""
    seen: dict[tuple[str, str], DeviceInfo] = {}
    for r in batch.readings:
        key = (r.home_id, r.device_id)
        info = seen.get(key)
        if info is None:
            seen[key] = DeviceInfo(r.home_id, r.device_id, r.kind, r.source, r.ts, r.ts)
        elif r.ts < info.first_seen or r.ts > info.last_seen:
            seen[key] = DeviceInfo(r.home_id, r.device_id, r.kind, r.source,
                                   min(info.first_seen, r.ts), max(info.last_seen, r.ts))
    return list(batch.devices) + list(seen.values())
