"""API keys of the HTTP ingest service, kept in the store (table ``api_keys``, migration 0010).

A key is 192 random bits (``secrets.token_urlsafe(24)``: 32 characters, the length of an emoncms
write key, so devices with a fixed-size key field take it). Only its SHA-256 is stored: with that
much entropy a slow password hash buys nothing, and a lookup by hash stays one index probe. A key
writes one home. Both stores share this code: the SQL differs only in placeholders and in how a
time is stored (integer microseconds in SQLite, timestamptz in PostgreSQL).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline.config import store_kind
from sinks.base import TRANSIENT, WritableStore
from sinks.rows import from_us, to_us


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str  # shown by `shems apikey list`, given to `revoke`; not a secret
    home_id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


def new_key() -> str:
    return secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """Add, list, revoke and look up keys in a migrated store (thread-safe: one lock around the
    store's one connection)."""

    def __init__(self, store: WritableStore) -> None:
        self.store = store
        self.sqlite = store_kind(store.url) == "sqlite"
        self.lock = threading.Lock()  # the store's connection is shared with dead-letter writes

    def _sql(self, sql: str) -> str:
        return sql if self.sqlite else sql.replace("?", "%s")

    def _time(self, value: datetime) -> Any:
        return to_us(value) if self.sqlite else value

    def _read_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return from_us(value) if self.sqlite else value.astimezone(timezone.utc)

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn: Any = self.store.conn  # type: ignore[attr-defined]  # both stores keep one
        with self.lock:
            try:
                return list(conn.execute(self._sql(sql), params).fetchall())
            except Exception as exc:
                if self.store.classify(exc) != TRANSIENT:
                    raise
                self.store.reconnect()  # a restarted PostgreSQL: one more try on a new connection
                conn = self.store.conn  # type: ignore[attr-defined]
                return list(conn.execute(self._sql(sql), params).fetchall())

    def _execute(self, sql: str, params: tuple) -> int:
        conn: Any = self.store.conn  # type: ignore[attr-defined]
        with self.lock:
            cur = conn.execute(self._sql(sql), params)
            return int(cur.rowcount)

    def add(self, home_id: str, label: str = "", now: datetime | None = None) -> tuple[ApiKey, str]:
        """A new key for ``home_id``: the record and the key itself (shown once, never stored)."""
        key = new_key()
        record = ApiKey(secrets.token_hex(6), home_id, label, now or datetime.now(timezone.utc), None)
        self._execute("INSERT INTO api_keys (key_id, key_hash, home_id, label, created_at) "
                      "VALUES (?, ?, ?, ?, ?)",
                      (record.key_id, key_hash(key), home_id, label, self._time(record.created_at)))
        return record, key

    def list(self) -> list[ApiKey]:
        rows = self._rows("SELECT key_id, home_id, label, created_at, revoked_at FROM api_keys "
                          "ORDER BY home_id, created_at, key_id")
        return [self._record(row) for row in rows]

    def revoke(self, key_id: str, now: datetime | None = None) -> bool:
        """False when there is no such key or it was revoked already."""
        return self._execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                             (self._time(now or datetime.now(timezone.utc)), key_id)) > 0

    def lookup(self, key: str) -> ApiKey | None:
        """The key's record when it exists and is not revoked."""
        if not key or len(key) > 256:
            return None
        rows = self._rows("SELECT key_id, home_id, label, created_at, revoked_at FROM api_keys "
                          "WHERE key_hash = ? AND revoked_at IS NULL", (key_hash(key),))
        return self._record(rows[0]) if rows else None

    def _record(self, row: tuple) -> ApiKey:
        created = self._read_time(row[3])
        assert created is not None
        return ApiKey(row[0], row[1], row[2], created, self._read_time(row[4]))
