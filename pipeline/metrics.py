"""Prometheus metrics of the flow. Labels stay bounded: never a home or device id."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "shems_messages_received_total", "MQTT messages received by the source", ["worker"]
)
READINGS_DECODED = Counter(
    "shems_readings_decoded_total", "Readings decoded and validated", ["worker", "source"]
)
DEAD_LETTERS = Counter(
    "shems_dead_letters_total", "Messages sent to the dead-letter store", ["worker", "reason"]
)
LATE_READINGS = Counter(
    "shems_late_readings_total",
    "Readings later than the allowed lateness: stored raw, left out of aggregates",
    ["worker"],
)
WINDOWS_EMITTED = Counter(
    "shems_windows_emitted_total", "1-minute aggregates emitted", ["worker", "level"]
)
SINK_BATCH_ROWS = Histogram(
    "shems_sink_batch_rows",
    "Rows per store transaction",
    ["worker"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
SINK_BATCH_SECONDS = Histogram(
    "shems_sink_batch_seconds",
    "Time to write one store transaction",
    ["worker"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SINK_FAILURES = Counter(
    "shems_sink_failures_total", "Store transactions that failed (and were retried)", ["worker"]
)
SINK_PENDING_ROWS = Gauge(
    "shems_sink_pending_rows", "Rows buffered for the store, not yet committed", ["worker"]
)
END_TO_END_LAG = Histogram(
    "shems_end_to_end_lag_seconds",
    "Event time of a reading to its commit in the store",
    ["worker"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
LAST_COMMIT_TIMESTAMP = Gauge(
    "shems_last_commit_timestamp_seconds", "Unix time of the last store commit", ["worker"]
)
BROKER_DROPPED_MESSAGES = Gauge(
    "shems_broker_dropped_messages",
    "Mosquitto's $SYS/broker/publish/messages/dropped: QoS>0 messages lost for full queues",
)

_worker = threading.local()


def set_worker(label: str) -> None:
    """Remember which Bytewax worker this thread is, for the ``worker`` label (set by sources)."""
    _worker.label = label


def worker_label() -> str:
    return getattr(_worker, "label", "0")

HOMES_TOTAL = Gauge("shems_homes_total", "Homes known to the store")
HOMES_SILENT = Gauge(
    "shems_homes_silent", "Homes with no reading for longer than the silence threshold"
)
