"""Row helpers both stores share: timestamps as integer microseconds, payload hashes, and the
column values of the records whose rows are the same in either store. The viewer reads
timestamps through here too, so neither it nor one store imports the other store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import overload

from pipeline import records as rec
from sinks.base import Batch, StoredRecommendation

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(ts: datetime) -> int:
    d = ts - _EPOCH  # exact integer arithmetic (a float timestamp could round a microsecond off)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


@overload
def from_us(us: int) -> datetime: ...
@overload
def from_us(us: None) -> None: ...
def from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def payload_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8", "replace")).hexdigest()


def dead_letter_hash(d: rec.DeadLetter) -> str:
    """The SHA-256 of the whole original payload (the stored payload may be only its prefix)."""
    return d.payload_sha256 or payload_hash(d.payload)


def _storable(text: object, limit: int) -> str:
    """Any value as text of at most ``limit`` characters that UTF-8 can encode (a lone surrogate
    would make the driver refuse the whole row)."""
    text = text if isinstance(text, str) else repr(text)
    if len(text) > limit:
        text = text[:limit] + "\u2026"
    return text.encode("utf-8", "replace").decode("utf-8")


def dead_letter_row(d: rec.DeadLetter, fix_text: Callable[[str], str] = lambda t: t) -> tuple:
    """A dead letter's column values, bounded again here: the table must accept whatever a dead
    letter holds, even one built without rec.DeadLetter.of (its unique index has to fit the topic).
    The last, reason_hash, tells apart the letters of one message stopped for several reasons.
    An imported row has one verdict (its first failing check) and a reason that may name the
    import's own clock ("... is 2274607029 s in the future"), so there only the step counts: the
    same file imported again adds no dead letter twice."""
    reason = fix_text(_storable(d.reason, rec.DEAD_LETTER_REASON_MAX))
    step = fix_text(_storable(d.step, 40))
    told_apart_by = "" if d.step == "import" else reason
    reason_hash = hashlib.sha256(f"{step}\x1f{told_apart_by}".encode()).hexdigest()
    return (d.received_at, fix_text(_storable(d.topic, rec.DEAD_LETTER_TOPIC_MAX)),
            fix_text(_storable(d.payload, rec.DEAD_LETTER_PAYLOAD_MAX)), reason, dead_letter_hash(d),
            step, fix_text(_storable(d.error, 200)), int(d.payload_bytes), reason_hash)


def device_rows(batch: Batch) -> list[rec.DeviceInfo]:
    """Registry entries of the batch plus one summary per device seen in its readings."""
    # [reading, first ts, last ts] per device; one DeviceInfo per device at the end, not one
    # per reading (readings come in time order, so nearly every one moved last_seen).
    seen: dict[tuple[str, str], list] = {}
    for r in batch.readings:
        key = (r.home_id, r.device_id)
        span = seen.get(key)
        if span is None:
            seen[key] = [r, r.ts, r.ts]
        elif r.ts > span[2]:
            span[0], span[2] = r, r.ts  # kind and source as of the reading that moved a bound
        elif r.ts < span[1]:
            span[0], span[1] = r, r.ts
    return list(batch.devices) + [rec.DeviceInfo(r.home_id, r.device_id, r.kind, r.source, first, last)
                                  for r, first, last in seen.values()]


# ----- one row tuple per record kind, in the tables' column order. Each store passes how it
# writes a time stamp (SQLite: integer microseconds; PostgreSQL: the datetime) and a count
# (PostgreSQL checks it fits an int4 column).

def _same(value):
    return value


def reading_row(r: rec.Reading, ts: Callable[[datetime], object] = _same) -> tuple:
    return (r.home_id, r.device_id, ts(r.ts), r.power_w, r.energy_wh, r.voltage_v, r.current_a)


def device_window_row(w: rec.DeviceWindow, ts: Callable[[datetime], object] = _same,
                      count: Callable[[int], int] = _same) -> tuple:
    return (w.home_id, w.device_id, ts(w.bucket), w.kind.value, w.mean_power_w, w.min_power_w,
            w.max_power_w, w.energy_wh, count(w.samples))


def home_window_row(w: rec.HomeWindow, ts: Callable[[datetime], object] = _same,
                    count: Callable[[int], int] = _same) -> tuple:
    return (w.home_id, ts(w.bucket), w.mean_power_w, w.min_power_w, w.max_power_w, w.energy_wh,
            count(w.samples))


def late_reading_row(x: rec.LateReading, ts: Callable[[datetime], object] = _same) -> tuple:
    return (x.reading.home_id, x.reading.device_id, ts(x.reading.ts), ts(x.bucket))


def forecast_row(f: rec.Forecast, ts: Callable[[datetime], object] = _same,
                 count: Callable[[int], int] = _same) -> tuple:
    return (f.home_id, count(f.resolution_min), ts(f.made_at), ts(f.target_ts), count(f.horizon_min),
            f.yhat_w, f.lower_w, f.upper_w, f.model)


def forecast_score_row(x: rec.ForecastScore, ts: Callable[[datetime], object] = _same) -> tuple:
    return (x.home_id, x.resolution_min, x.horizon_min, x.model, x.n, x.mae_w, x.naive_day_mae_w,
            x.naive_week_mae_w, x.coverage, ts(x.updated_at))


def anomaly_row(a: rec.Anomaly, ts: Callable[[datetime], object] = _same) -> tuple:
    return (a.home_id, a.device_id, a.kind.value, ts(a.started_at),
            None if a.ended_at is None else ts(a.ended_at), a.score, a.message)


def recommendation_row(r: rec.Recommendation, ts: Callable[[datetime], object] = _same) -> tuple:
    return (r.home_id, r.kind, r.device_id, ts(r.created_at), ts(r.created_at), r.title, r.detail,
            r.kwh_per_month, r.money_per_month, r.currency)


def command_ack_row(a: rec.CommandAck, ts: Callable[[datetime], object] = _same) -> tuple:
    return (a.command_id, a.status.value, a.home_id, a.device_id, a.state.value, ts(a.ts),
            ts(a.received_at), a.message)


# ---------------------------------------------------------------------- rows back to records.
# ``ts`` turns the database's time value into an aware datetime: ``from_us`` for SQLite's integer
# microseconds, the default for PostgreSQL's timestamptz. Column orders are the tables' own.

def reading_from_row(row: Sequence, ts: Callable = _same) -> rec.Reading:
    h, d, t, p, e, v, a, k, s = row
    return rec.Reading(h, d, ts(t), p, e, v, a, rec.DeviceKind(k or "appliance"), rec.Source(s or "native"))


def device_window_from_row(row: Sequence, ts: Callable = _same) -> rec.DeviceWindow:
    h, d, k, b, m, lo, hi, e, n = row
    return rec.DeviceWindow(h, d, rec.DeviceKind(k), ts(b), m, lo, hi, e, n)


def home_window_from_row(row: Sequence, ts: Callable = _same) -> rec.HomeWindow:
    h, b, m, lo, hi, e, n = row
    return rec.HomeWindow(h, ts(b), m, lo, hi, e, n)


def dead_letter_from_row(row: Sequence, ts: Callable = _same) -> rec.DeadLetter:
    t, *rest = row
    return rec.DeadLetter(ts(t), *rest)


def device_info_from_row(row: Sequence, ts: Callable = _same) -> rec.DeviceInfo:
    h, d, k, s, f, last, v, c, tz = row
    return rec.DeviceInfo(h, d, rec.DeviceKind(k), rec.Source(s), ts(f), ts(last), v, c, tz)


def forecast_from_row(row: Sequence, ts: Callable = _same) -> rec.Forecast:
    """Columns as the table orders them: home, resolution, made_at, target, horizon, ..."""
    h, r, m, t, hz, y, lo, hi, model = row
    return rec.Forecast(h, ts(m), ts(t), r, hz, y, lo, hi, model)


def forecast_score_from_row(row: Sequence, ts: Callable = _same) -> rec.ForecastScore:
    h, r, hz, model, n, mae, day, week, cov, at, *_ = row
    return rec.ForecastScore(h, r, hz, model, n, mae, day, week, cov, ts(at))


def anomaly_from_row(row: Sequence, ts: Callable = _same) -> rec.Anomaly:
    h, d, k, s, e, score, msg, *_ = row
    return rec.Anomaly(h, d, rec.AnomalyKind(k), ts(s), ts(e), score, msg)


def recommendation_from_row(row: Sequence, ts: Callable = _same) -> StoredRecommendation:
    h, k, d, c, u, title, detail, kwh, money, cur, status, sc, sb, *_ = row
    return StoredRecommendation(rec.Recommendation(h, d, k, ts(c), title, detail, kwh, money, cur),
                                ts(u), status, ts(sc), sb)


def tariff_from_row(row: Sequence, ts: Callable = _same) -> rec.TariffRow:
    h, t, spec = row
    return rec.TariffRow(h, ts(t), spec)
