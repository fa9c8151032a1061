"""The flow's store sink: buffers records per worker and commits them in batches.

A batch is committed when it holds ``batch_rows`` rows or its oldest row has waited
``flush_interval_s`` (sources emit :class:`Tick` records so this also happens when input is idle).
Writing is synchronous in the worker: a slow store slows the flow down (back-pressure) instead of
growing an unbounded buffer, and a clean shutdown leaves nothing uncommitted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import datetime, timezone
from typing import Protocol, cast
from zlib import adler32

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from tenacity import Retrying, retry_if_exception, stop_never, wait_exponential_jitter

from pipeline import metrics
from pipeline.logs import get_logger
from pipeline.records import DeadLetter, LateReading, Tick
from sinks.base import BATCH_FIELD, ROW, TRANSIENT, Batch, StoreError, WritableStore, mask_url, one_line
from sinks.stores import open_store

log = get_logger(__name__)


class BatchBuffer:
    """Sorts records into a :class:`Batch` and says when it is due; no I/O, so it is testable."""

    def __init__(self, batch_rows: int, flush_interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.batch = Batch()
        self.rows = 0
        self.oldest: float | None = None

    def add(self, items: Iterable[object]) -> None:
        b = self.batch
        added = 0
        for item in items:
            field_name = BATCH_FIELD.get(type(item))
            if field_name is None:
                if isinstance(item, Tick):
                    continue
                raise TypeError(f"store sink got an unexpected record: {type(item).__name__}")
            getattr(b, field_name).append(item)
            added += 1
        if added:
            self.rows += added
            if self.oldest is None:
                self.oldest = self.clock()

    def due(self) -> bool:
        if self.rows == 0 or self.oldest is None:  # oldest is set with the first row
            return False
        return self.rows >= self.batch_rows or self.clock() - self.oldest >= self.flush_interval_s

    def take(self) -> Batch:
        batch, self.batch, self.rows, self.oldest = self.batch, Batch(), 0, None
        return batch


class StoreWriter:
    """Commits batches to a store; a batch is never given up on.

    - A transient failure (store down or restarting, connection lost, timeout, lock, serialization
      failure) is retried with capped exponential backoff for as long as it takes, reconnecting
      before each attempt. The worker blocks meanwhile: that is the flow's back-pressure. While it
      lasts ``shems_store_unavailable`` is 1 and a ``store_write_retry`` line is logged at each
      backoff step up to the cap, then once a minute; ``store_recovered`` says how long it took.
    - A failure caused by one record (a value or key the store refuses) rolls the batch back and
      writes it again in one transaction, bisected with savepoints, so that every other record
      is stored and each refused one becomes a dead letter (step ``sink``) in the same commit.
    - Anything else (a missing table, credentials refused) raises :class:`StoreError`.
    """

    def __init__(self, store: WritableStore, worker: str = "0", backoff_initial_s: float = 0.25,
                 backoff_max_s: float = 10.0, quiet_log_interval_s: float = 60.0) -> None:
        self.store = store
        self.worker = worker
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.quiet_log_interval_s = quiet_log_interval_s
        self._rows = metrics.SINK_BATCH_ROWS.labels(worker=worker)
        self._seconds = metrics.SINK_BATCH_SECONDS.labels(worker=worker)
        self._failures = metrics.SINK_FAILURES.labels(worker=worker)
        self._retries = metrics.STORE_RETRIES.labels(worker=worker)
        self._unavailable = metrics.STORE_UNAVAILABLE.labels(worker=worker)
        self._dead = metrics.DEAD_LETTERS.labels(worker=worker, reason="sink")
        self._lag = metrics.END_TO_END_LAG.labels(worker=worker)
        self._last_commit = metrics.LAST_COMMIT_TIMESTAMP.labels(worker=worker)
        self._outage_started: float | None = None
        self._last_outage_log = 0.0

    def write(self, batch: Batch) -> list[DeadLetter]:
        """Store the batch; returns the dead letters written for records the store refused."""
        started = time.perf_counter()
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: self.store.classify(exc) == TRANSIENT),
            wait=wait_exponential_jitter(multiplier=self.backoff_initial_s, max=self.backoff_max_s,
                                         jitter=self.backoff_initial_s),
            stop=stop_never,
            reraise=True,
            before_sleep=self._before_retry,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.store.reconnect()
                    refused = self._write_once(batch)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {mask_url(self.store.url)} refused a write "
                             f"({error_code(exc)}): {one_line(exc)}") from exc
        if self._outage_started is not None:
            log.info("store_recovered", store=mask_url(self.store.url),
                     outage_s=round(time.monotonic() - self._outage_started, 1))
            self._outage_started = None
            self._unavailable.set(0)
        self._seconds.observe(time.perf_counter() - started)
        self._rows.observe(len(batch))
        now = datetime.now(timezone.utc)
        self._last_commit.set(now.timestamp())
        if batch.readings:
            # Observing every row costs ~1 us each; the newest and oldest bound the distribution.
            for r in (batch.readings[0], batch.readings[-1]):
                if isinstance(r.ts, datetime):  # not a refused reading without one
                    self._lag.observe(max(0.0, (now - r.ts).total_seconds()))
        return refused

    def _write_once(self, batch: Batch) -> list[DeadLetter]:
        try:
            self.store.write(batch)
            return []
        except Exception as exc:
            if self.store.classify(exc) != ROW:
                raise
        return self._write_isolating(batch)

    def _write_isolating(self, batch: Batch) -> list[DeadLetter]:
        refused: list[tuple[str, object, BaseException]] = []
        with self.store.transaction():
            self._bisect(batch_records(batch), refused)
            letters = [sink_dead_letter(field_name, record, exc) for field_name, record, exc in refused]
            self.store.write_rows(Batch(dead_letters=letters))
        self.store.after_commit(batch)
        if not letters:  # refused once, accepted now (a value the store judged differently)
            return letters
        self._dead.inc(len(letters))
        log.warning("store_rows_refused", store=mask_url(self.store.url), refused=len(letters),
                    stored=len(batch) - len(letters),
                    errors=sorted({letter.error for letter in letters}))
        return letters

    def _bisect(self, records: list[tuple[str, object]], refused: list) -> None:
        """Write ``records`` inside a savepoint; if the store refuses one of them, undo and write
        each half the same way, down to the single records that are refused."""
        try:
            with self.store.savepoint():
                self.store.write_rows(batch_of(records))
        except Exception as exc:
            if self.store.classify(exc) != ROW:
                raise
            if len(records) == 1:
                refused.append((*records[0], exc))
                return
            middle = len(records) // 2
            self._bisect(records[:middle], refused)
            self._bisect(records[middle:], refused)

    def _before_retry(self, state) -> None:
        self._failures.inc()
        self._retries.inc()
        now = time.monotonic()
        exc = state.outcome.exception()
        if self._outage_started is None:
            self._outage_started = now
            self._unavailable.set(1)
        # Log every step while the backoff still grows, then once per quiet interval.
        growing = self.backoff_initial_s * 2 ** (state.attempt_number - 1) < self.backoff_max_s
        if growing or now - self._last_outage_log >= self.quiet_log_interval_s:
            self._last_outage_log = now
            log.warning("store_write_retry", store=mask_url(self.store.url), attempt=state.attempt_number,
                        outage_s=round(now - self._outage_started, 1),
                        next_try_s=round(state.upcoming_sleep, 2), error=one_line(exc))


def batch_records(batch: Batch) -> list[tuple[str, object]]:
    """Every record of a batch with the name of its list, to write any subset of them again."""
    return [(f.name, record) for f in fields(Batch) for record in getattr(batch, f.name)]


def batch_of(records: Iterable[tuple[str, object]]) -> Batch:
    batch = Batch()
    for field_name, record in records:
        getattr(batch, field_name).append(record)
    return batch


def error_code(exc: BaseException) -> str:
    """PostgreSQL's condition name (program_limit_exceeded), SQLite's result code name
    (sqlite_constraint_notnull) or the exception's class name (OverflowError)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    sqlite_name = getattr(exc, "sqlite_errorname", None)
    if sqlite_name:
        return sqlite_name.lower()
    return type(exc).__name__


_RECORD_TIMES = ("ts", "bucket", "made_at", "started_at", "created_at", "updated_at", "received_at")


def sink_dead_letter(field_name: str, record: object, exc: BaseException) -> DeadLetter:
    """The dead letter for a record the store refused: where it was going, the store's reason,
    and a bounded repr of the record (DeadLetter.of clips it and hashes the whole).

    Its time is the record's own when it has a usable one, so a replayed batch (a restart with
    --recovery-dir) finds the same dead letter already stored instead of adding another."""
    inner = record.reading if isinstance(record, LateReading) else record
    if isinstance(inner, DeadLetter):
        topic = inner.topic
    else:
        topic = "/".join(str(getattr(inner, name)) for name in ("home_id", "device_id") if hasattr(inner, name))
    times = (getattr(inner, name, None) for name in _RECORD_TIMES)
    at = next((t for t in times if isinstance(t, datetime) and t.tzinfo is not None), None)
    return DeadLetter.of(at or datetime.now(timezone.utc), topic, repr(record),
                         f"{field_name}: {one_line(exc)}", step="sink", error=error_code(exc))


class StoreSink(DynamicSink):
    """Bytewax sink: one store connection and buffer per worker."""

    def __init__(self, store_url: str, batch_rows: int = 5000, flush_interval_s: float = 0.5) -> None:
        self.store_url = store_url
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StorePartition:
        metrics.set_worker(str(worker_index))
        return StorePartition(self, str(worker_index))


class _BufferedStore:
    """One store connection, a buffer, and the rules for when to commit it."""

    def __init__(self, sink, worker: str) -> None:
        self.store = open_store(sink.store_url)
        self.writer = StoreWriter(self.store, worker)
        self.buffer = BatchBuffer(sink.batch_rows, sink.flush_interval_s)
        self._pending = metrics.SINK_PENDING_ROWS.labels(worker=worker)

    def write_batch(self, items: list[object]) -> None:
        self.buffer.add(items)
        if self.buffer.due():
            self.writer.write(self.buffer.take())
        self._pending.set(self.buffer.rows)

    def flush(self) -> None:
        if self.buffer.rows:
            self.writer.write(self.buffer.take())
        self._pending.set(0)

    def close(self) -> None:
        self.flush()
        self.store.close()


class StorePartition(_BufferedStore, StatelessSinkPartition):
    pass


class _OfHome(Protocol):
    home_id: str


def sink_key(item: object) -> str:
    """Routing key for the recoverable sink: ticks go to the partition of their source."""
    if isinstance(item, Tick):
        return f"#{item.partition}"
    if isinstance(item, DeadLetter):
        return item.topic
    if isinstance(item, LateReading):
        return item.reading.home_id
    return cast(_OfHome, item).home_id  # readings, windows, forecasts, anomalies, recommendations, acks


class RecoverableStoreSink(FixedPartitionedSink):
    """The sink for flows with recovery: it commits its buffer whenever Bytewax snapshots, so an
    epoch is never recorded as done while its rows wait in memory (a SIGKILL would lose them:
    the resumed source starts after them)."""

    def __init__(self, store_url: str, partitions: int, batch_rows: int = 5000,
                 flush_interval_s: float = 0.5) -> None:
        self.store_url = store_url
        self.partitions = partitions
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        if item_key.startswith("#"):
            return int(item_key[1:])
        return adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> RecoverableStorePartition:
        metrics.set_worker(for_part)
        return RecoverableStorePartition(self, for_part)


class RecoverableStorePartition(_BufferedStore, StatefulSinkPartition):
    def snapshot(self) -> None:
        self.flush()
        return None
