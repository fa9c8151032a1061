"""Prometheus metrics of the flow. Labels stay bounded: never a home or device id."""

from __future__ import annotations

import re
import threading

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "shems_messages_received_total", "MQTT messages received by the source", ["worker"]
)
READINGS_DECODED = Counter(
    "shems_readings_decoded_total", "Readings decoded and validated", ["worker", "source"]
)
DEAD_LETTERS = Counter(
    "shems_dead_letters_total",
    "Messages and records sent to the dead-letter store, by error code (or a class of the reason "
    "when there is none)",
    ["worker", "reason"],
)
# A counter of its own rather than a label on the one above: its label set (and every dashboard,
# alert and caller of it) stays as it was.
DEAD_LETTER_STEPS = Counter(
    "shems_dead_letters_by_step_total",
    "Dead letters by the step that stopped them (decode, windowing, home_total, insights, sink, "
    "replay, ...)",
    ["worker", "step"],
)
LATE_READINGS = Counter(
    "shems_late_readings_total",
    "Readings later than the allowed lateness: stored raw, left out of aggregates",
    ["worker"],
)
READINGS_RATE_LIMITED = Counter(
    "shems_readings_rate_limited_total",
    "Readings of a flooding device over its rate on its own clock: counted, not stored "
    "(pipeline/ingest/flood.py; the first of a flood and every 10,000th are dead letters)",
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
STORE_RETRIES = Counter(
    "shems_store_retries_total", "Store writes retried after a transient failure (store down, timeout, lock)",
    ["worker"],
)
STORE_UNAVAILABLE = Gauge(
    "shems_store_unavailable", "1 while this worker's writes fail and are being retried, else 0", ["worker"]
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
FORECASTS_ISSUED = Counter(
    "shems_forecasts_issued_total", "Forecast values issued (one per home, target slot and issue)",
    ["worker", "resolution"],
)
FORECAST_MAE_RATIO = Gauge(
    "shems_forecast_mae_ratio",
    "Sum over this worker's homes of the model's prequential MAE divided by the sum of the better "
    "seasonal-naive MAE, per horizon: above 1 the forecasts are worse than 'same slot yesterday'",
    ["worker", "resolution", "horizon"],
)
FORECAST_MAE_WATTS = Gauge(
    "shems_forecast_mae_watts", "Mean over this worker's homes of the model's prequential MAE (W)",
    ["worker", "resolution", "horizon"],
)
ANOMALIES = Counter(
    "shems_anomalies_total", "Anomalies opened and closed", ["worker", "kind", "event"]
)
RECOMMENDATIONS = Counter(
    "shems_recommendations_total", "Recommendations emitted (new or refreshed)", ["worker", "kind"]
)
BROKER_DROPPED_MESSAGES = Gauge(
    "shems_broker_dropped_messages",
    "Mosquitto's $SYS/broker/publish/messages/dropped: QoS>0 messages lost for full queues",
)
BROKER_DROPPED_SEEN = Counter(
    "shems_broker_dropped_messages_seen_total",
    "Increases of the broker's dropped-message count seen by the flow (each one is also logged "
    "as broker_dropped_messages)",
)
MQTT_SESSIONS_LOST = Counter(
    "shems_mqtt_sessions_lost_total",
    "Connects that found the broker-side session gone when one was expected: whatever the broker "
    "had queued for the flow is lost",
)
SOURCE_BUFFERED = Gauge(
    "shems_source_buffered_messages",
    "Messages received and waiting for the flow in memory (bounded by --max-buffered-messages)",
    ["worker"],
)
SOURCE_HELD = Gauge(
    "shems_source_held_messages",
    "Messages received but not acknowledged because the buffer is full (the broker queues the rest)",
    ["worker"],
)
SOURCE_PAUSES = Counter(
    "shems_source_pauses_total", "Times the source stopped acknowledging because its buffer was full",
    ["worker"],
)
SPOOL_CAREFUL_REPLAYS = Counter(
    "shems_spool_careful_replays_total",
    "Starts that replayed the spool one message at a time because earlier starts from the same "
    "offset died",
    ["worker"],
)

_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


def reason_class(reason: str) -> str:
    """A bounded label for a free-text dead-letter reason (metrics must not explode in labels)."""
    r = reason.lower()
    for needle, label in (
        ("json", "invalid_json"),
        ("unregistered", "unregistered_device"),
        ("not registered", "unregistered_device"),
        ("unknown topic", "unknown_topic"),
        ("no decoder", "unknown_topic"),
        ("future", "future_timestamp"),
        ("finite", "not_finite"),
        ("bounds", "out_of_bounds"),
        ("outside", "out_of_bounds"),
        ("missing", "missing_field"),
    ):
        if needle in r:
            return label
    return "invalid_payload"


def dead_letter_labels(dead) -> tuple[str, str]:
    """``(reason, step)`` labels of a dead letter: its error code when it has one (a short
    identifier: a code or an exception class), else a class of its reason."""
    error = dead.error
    label = error if error and _ERROR_CODE.fullmatch(error) else reason_class(dead.reason)
    step = dead.step if _ERROR_CODE.fullmatch(dead.step or "") else "other"
    return label, step


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


# ---------------------------------------------------------------- the CLI's long commands
IMPORTED_READINGS = Counter("shems_imported_readings_total", "Readings read from files by shems import")


class PublisherCollector:
    """``shems replay``/``simulate``: what a Publisher sent and the broker acknowledged, read at
    scrape time (no cost on the publishing path)."""

    def __init__(self, publisher, command: str) -> None:
        self.publisher = publisher
        self.command = command

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        sent = CounterMetricFamily("shems_published_readings", "Messages published", labels=["command"])
        sent.add_metric([self.command], self.publisher.sent)
        acked = CounterMetricFamily("shems_published_acked", "Publishes the broker acknowledged",
                                    labels=["command"])
        acked.add_metric([self.command], self.publisher.acked)
        return [sent, acked]


def push_import_summary(gateway: str, readings: int, seconds: float, ok: bool) -> None:
    """A batch job's result for Prometheus, pushed to a Pushgateway (the job ends before any
    scrape could reach it)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Gauge("shems_import_readings", "Readings in the last import", registry=registry).set(readings)
    Gauge("shems_import_seconds", "Duration of the last import", registry=registry).set(seconds)
    Gauge("shems_import_success", "1 if the last import succeeded", registry=registry).set(int(ok))
    if ok:
        Gauge("shems_import_last_success_timestamp_seconds", "Unix time of the last successful import",
              registry=registry).set_to_current_time()
    push_to_gateway(gateway, job="shems_import", registry=registry)
