"""The one store interface that both SQLite and PostgreSQL/TimescaleDB implement.

A store receives whole batches (:class:`Batch`) and writes each in one transaction. Every write
is idempotent: raw readings are keyed by ``(home_id, device_id, ts)`` and a replay is ignored;
aggregates are keyed by their bucket and a re-emitted window replaces the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Sequence

from pipeline.records import DeadLetter, DeviceInfo, DeviceWindow, HomeWindow, LateReading, Reading

# Same table names and columns in every store (see docs/ARCHITECTURE.md).
TABLES = ("readings", "device_1m", "home_1m", "devices", "dead_letter", "late_readings")


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

    def __len__(self) -> int:
        return (
            len(self.late_readings)
            + len(self.readings)
            + len(self.device_windows)
            + len(self.home_windows)
            + len(self.dead_letters)
            + len(self.devices)
        )


class Store(Protocol):
    """What the flow, the importer, the benchmark and the viewer need from a store."""

    url: str  # as given, for display only after secrets are masked (see mask_url)

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

    def close(self) -> None: ...


def mask_url(url: str) -> str:
    """The URL with any password replaced, safe for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(url: str) -> Store:
    """Open a store by URL: ``sqlite:///path.db`` or ``postgresql://...``."""
    if url.startswith("sqlite://"):
        from sinks.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from sinks.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"unsupported store URL {mask_url(url)!r}: use sqlite:///path.db or postgresql://..."
    )
