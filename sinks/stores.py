"""Opening a store by its URL: the one place that knows both stores, so neither imports the other
and ``sinks.base`` stays the interface alone."""

from __future__ import annotations

from pipeline.config import store_kind
from sinks.base import WritableStore, mask_url


def open_store(url: str) -> WritableStore:
    """Open a store by URL: ``sqlite:///path.db`` or ``postgresql://...``.

    Raises :class:`StoreUnavailable` when the store cannot be reached within its start-up
    deadline and :class:`StoreError` when it refuses us (credentials, missing database), each
    with a one-line message."""
    kind = store_kind(url)
    if kind == "sqlite":
        from sinks.sqlite import SqliteStore

        return SqliteStore(url)
    if kind == "postgres":
        from sinks.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"unsupported store URL {mask_url(url)!r}: use sqlite:///path.db or postgresql://..."
    )
