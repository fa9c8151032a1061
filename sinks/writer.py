"""The flow's store sink: buffers records per worker and commits them in batches.

A batch is committed when it holds ``batch_rows`` rows or its oldest row has waited
``flush_interval_s`` (sources emit :class:`Tick` records so this also happens when input is idle).
Writing is synchronous in the worker: a slow store slows the flow down (back-pressure) instead of
growing an unbounded buffer, and a clean shutdown leaves nothing uncommitted.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, Iterable

from zlib import adler32

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from tenacity import Retrying, stop_after_attempt, wait_exponential

from pipeline import metrics
from pipeline.logs import get_logger
from pipeline.records import (Anomaly, CommandAck, DeadLetter, DeviceWindow, Forecast, ForecastScore, HomeWindow,
                              LateReading, Reading, Recommendation, Tick)
from sinks.base import Batch, Store, mask_url, open_store

log = get_logger(__name__)


# Which list of a Batch each record type goes to (exact types: records are final dataclasses).
_BATCH_FIELD: dict[type, str] = {
    Reading: "readings", DeviceWindow: "device_windows", HomeWindow: "home_windows",
    DeadLetter: "dead_letters", LateReading: "late_readings", Forecast: "forecasts",
    ForecastScore: "forecast_scores", Anomaly: "anomalies", Recommendation: "recommendations",
    CommandAck: "command_acks",
}


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
            field_name = _BATCH_FIELD.get(type(item))
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
        if self.rows == 0:
            return False
        return self.rows >= self.batch_rows or self.clock() - self.oldest >= self.flush_interval_s

    def take(self) -> Batch:
        batch, self.batch, self.rows, self.oldest = self.batch, Batch(), 0, None
        return batch


class StoreWriter:
    """Commits batches to a store, retrying transient failures with backoff (tenacity)."""

    def __init__(self, store: Store, worker: str = "0", attempts: int = 8) -> None:
        self.store = store
        self.worker = worker
        self.attempts = attempts
        self._rows = metrics.SINK_BATCH_ROWS.labels(worker=worker)
        self._seconds = metrics.SINK_BATCH_SECONDS.labels(worker=worker)
        self._failures = metrics.SINK_FAILURES.labels(worker=worker)
        self._lag = metrics.END_TO_END_LAG.labels(worker=worker)
        self._last_commit = metrics.LAST_COMMIT_TIMESTAMP.labels(worker=worker)

    def write(self, batch: Batch) -> None:
        started = time.perf_counter()
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=10),
            reraise=True,
            before_sleep=self._before_retry,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.store.reconnect()
                self.store.write(batch)
        self._seconds.observe(time.perf_counter() - started)
        self._rows.observe(len(batch))
        now = datetime.now(timezone.utc)
        self._last_commit.set(now.timestamp())
        if batch.readings:
            # Observing every row costs ~1 us each; the newest and oldest bound the distribution.
            for r in (batch.readings[0], batch.readings[-1]):
                self._lag.observe(max(0.0, (now - r.ts).total_seconds()))

    def _before_retry(self, state) -> None:
        self._failures.inc()
        log.warning(
            "store_write_retry",
            store=mask_url(self.store.url),
            attempt=state.attempt_number,
            error=repr(state.outcome.exception()),
        )


class StoreSink(DynamicSink):
    """Bytewax sink: one store connection and buffer per worker."""

    def __init__(self, store_url: str, batch_rows: int = 5000, flush_interval_s: float = 0.5) -> None:
        self.store_url = store_url
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "StorePartition":
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


def sink_key(item: object) -> str:
    """Routing key for the recoverable sink: ticks go to the partition of their source."""
    if isinstance(item, Tick):
        return f"#{item.partition}"
    if isinstance(item, DeadLetter):
        return item.topic
    if isinstance(item, LateReading):
        return item.reading.home_id
    return item.home_id  # readings, windows, forecasts, anomalies, recommendations, acks


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

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> "RecoverableStorePartition":
        metrics.set_worker(for_part)
        return RecoverableStorePartition(self, for_part)


class RecoverableStorePartition(_BufferedStore, StatefulSinkPartition):
    def snapshot(self) -> None:
        self.flush()
        return None
