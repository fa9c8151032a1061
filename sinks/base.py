"""The one store interface that both SQLite and PostgreSQL/TimescaleDB implement.

A store receives whole batches (:class:`Batch`) and writes each in one transaction. Every write
is idempotent: raw readings are keyed by ``(home_id, device_id, ts)`` and a replay is ignored;
aggregates are keyed by their bucket and a re-emitted window replaces the earlier one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pipeline.records import (
    Anomaly,
    CommandAck,
    DeadLetter,
    DeviceInfo,
    DeviceWindow,
    Forecast,
    ForecastScore,
    HomeWindow,
    LateReading,
    Reading,
    Recommendation,
    TariffRow,  # the one tariff row type; stores read and write it
)

# Same table names and columns in every store (see docs/ARCHITECTURE.md).
TABLES = ("readings", "device_1m", "home_1m", "devices", "dead_letter", "late_readings",
          "forecasts", "forecast_scores", "anomalies", "recommendations")

RECOMMENDATION_STATUSES = ("new", "accepted", "dismissed")


def check_recommendation_status(status: str) -> None:
    """Refuse a status no store keeps (ValueError), before anything is written."""
    if status not in RECOMMENDATION_STATUSES:
        raise ValueError(f"status must be one of {RECOMMENDATION_STATUSES}, got {status!r}")


class StoreError(Exception):
    """The store cannot be written for a reason that waiting will not fix (schema mismatch, wrong
    credentials, bad configuration). The message is one line, safe to print (no secrets)."""


class StoreUnavailable(StoreError):
    """The store could not be reached at start-up within the start-up deadline: an orchestrator
    should restart the process later. Once running, outages are ridden out instead."""


# How an exception raised by a store write is handled (see sinks.writer.StoreWriter).
TRANSIENT = "transient"  # the store is down, restarting, locked or slow: retry the batch
ROW = "row"  # one record of the batch cannot be stored: isolate it, dead-letter it, store the rest
FATAL = "fatal"  # not about one record, and waiting will not help: stop with a StoreError


@dataclass(frozen=True, slots=True)
class StoredRecommendation:
    """A recommendation as stored: the generator's record plus the homeowner's decision."""

    recommendation: Recommendation
    updated_at: datetime
    status: str
    status_changed_at: datetime | None
    status_changed_by: str | None


@dataclass(slots=True)
class Batch:
    """Everything to write in one transaction."""

    readings: list[Reading] = field(default_factory=list)
    device_windows: list[DeviceWindow] = field(default_factory=list)
    home_windows: list[HomeWindow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    devices: list[DeviceInfo] = field(default_factory=list)
    # Readings that came after their window closed; their raw row is in `readings` already.
    late_readings: list[LateReading] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)
    forecast_scores: list[ForecastScore] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    command_acks: list[CommandAck] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.late_readings)
            + len(self.readings)
            + len(self.device_windows)
            + len(self.home_windows)
            + len(self.dead_letters)
            + len(self.devices)
            + len(self.forecasts)
            + len(self.forecast_scores)
            + len(self.anomalies)
            + len(self.recommendations)
            + len(self.command_acks)
        )


# Which list of a Batch each record type goes to (exact types: records are final dataclasses).
BATCH_FIELD: dict[type, str] = {
    Reading: "readings", DeviceWindow: "device_windows", HomeWindow: "home_windows",
    DeadLetter: "dead_letters", LateReading: "late_readings", Forecast: "forecasts",
    ForecastScore: "forecast_scores", Anomaly: "anomalies", Recommendation: "recommendations",
    CommandAck: "command_acks",
}


class Store(Protocol):
    """What the flow, the importer, the benchmark and the viewer need from a store."""

    url: str  # as given, for display only after secrets are masked (see mask_url)
    has_timescale: bool  # hypertables and continuous aggregates (PostgreSQL with TimescaleDB only)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest version; safe to call on every start."""

    def write(self, batch: Batch) -> None:
        """Write a batch in one transaction.

        ``devices`` in the batch and the devices seen in ``readings`` are upserted: kind and source
        are updated, ``first_seen`` only ever moves earlier and ``last_seen`` only later.
        """

    def upsert_devices(self, devices: Sequence[DeviceInfo]) -> None:
        """Store registry entries (first_seen/last_seen stay NULL until a reading arrives)."""

    def counts(self) -> dict[str, int]:
        """Row count of every table in TABLES."""

    def readings(
        self, home_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[Reading]:
        """Raw readings ordered by (home_id, device_id, ts); ``end`` is exclusive."""

    def device_windows(self, home_id: str | None = None) -> list[DeviceWindow]:
        """device_1m rows ordered by (home_id, device_id, bucket)."""

    def home_windows(self, home_id: str | None = None) -> list[HomeWindow]:
        """home_1m rows ordered by (home_id, bucket)."""

    def dead_letters(self) -> list[DeadLetter]:
        """dead_letter rows ordered by received_at."""

    def home_last_seen(self) -> dict[str, datetime | None]:
        """Each home's newest reading time (None for a registered home never heard from)."""

    def devices(self) -> list[DeviceInfo]:
        """devices rows ordered by (home_id, device_id)."""

    def export_batches(self, table: str, rows: int = 50_000) -> Iterator[list]:
        """The records of ``table`` (readings, device_1m, home_1m or devices), in the order of the
        method that reads it whole, ``rows`` at a time: a fleet's readings do not fit in memory."""

    def forecasts(self, home_id: str | None = None, resolution_min: int | None = None,
                  made_at: datetime | None = None) -> list[Forecast]:
        """forecasts rows ordered by (home_id, resolution_min, made_at, target_ts)."""

    def forecast_scores(self, home_id: str | None = None) -> list[ForecastScore]:
        """forecast_scores rows ordered by (home_id, resolution_min, horizon_min)."""

    def anomalies(self, home_id: str | None = None, open_only: bool = False) -> list[Anomaly]:
        """anomalies rows ordered by (home_id, started_at, device_id, kind)."""

    def recommendations(self, home_id: str | None = None) -> list[StoredRecommendation]:
        """recommendations rows ordered by (home_id, kind, device_id)."""

    def set_recommendation_status(self, home_id: str, kind: str, device_id: str, status: str,
                                  by: str) -> bool:
        """Record the homeowner's decision; False when there is no such recommendation."""

    def tariffs(self) -> list[TariffRow]:
        """The stored tariff history ordered by (home_id, effective_from)."""

    def upsert_tariffs(self, rows: Sequence[TariffRow]) -> None:
        """Add or replace tariff history entries (keyed by home and effective date)."""

    def close(self) -> None: ...


class WritableStore(Store, Protocol):
    """The parts of a store that the writer composes to isolate bad rows (both stores have them)."""

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction: committed on normal exit, rolled back on an exception."""

    def savepoint(self) -> AbstractContextManager[None]:
        """Inside a transaction: on an exception only what was written inside is undone."""

    def write_rows(self, batch: Batch) -> None:
        """Write a batch's rows inside the current transaction (no commit)."""

    def after_commit(self, batch: Batch) -> None:
        """Work that must follow the commit (TimescaleDB refreshes); idempotent."""

    def classify(self, exc: BaseException) -> str:
        """TRANSIENT, ROW or FATAL for an exception raised by this store's writes."""

    def reconnect(self) -> None: ...


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (drivers spread theirs over several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def mask_url(url: str) -> str:
    """The URL with every password replaced (user:***@, ?password=***, ?sslpassword=***), safe
    for logs and messages."""
    from pipeline.logs import mask_secrets

    return mask_secrets(url)
