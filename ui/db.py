"""The viewer's connection to a store: SQL in one form for both dialects, results as polars frames.

Queries are written with ``:name`` parameters; PostgreSQL gets them as ``%(name)s``. Times leave
the database as integer microseconds since the epoch (``Database.us`` wraps a column for
PostgreSQL; SQLite stores them that way) and become ``Datetime("us", "UTC")`` columns, so a frame
is the same whichever store it came from. Where the SQL itself must differ, the caller asks
``db.dialect`` and writes both; nothing else here knows about dialects.

SQLite: one connection per thread (Streamlit runs each session in its own thread). PostgreSQL: a
small psycopg pool shared by every session of the process.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import polars as pl

from pipeline.config import sqlite_path, store_kind
from sinks.base import mask_url
from sinks.rows import to_us
from sinks.stores import open_store

TS = pl.Datetime("us", "UTC")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

Params = Mapping[str, Any]
# A column's type as queries name it: a class (pl.Utf8) or a parametrised instance (TS).
ColumnType = pl.DataType | type[pl.DataType]
Schema = Mapping[str, ColumnType]


class Database:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.dialect = "sqlite" if store_kind(url) == "sqlite" else "postgres"
        store = open_store(url)  # validates the URL the same way the flow does
        try:
            if migrate:
                store.migrate()
            self.has_timescale = bool(store.has_timescale)
        finally:
            store.close()
        self._local = threading.local()
        self._pool = None
        if self.dialect == "postgres":
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(url, min_size=1, max_size=8, open=True,
                                        kwargs={"autocommit": True}, configure=_utc_session,
                                        name="shems-viewer")

    def __repr__(self) -> str:
        return f"Database({mask_url(self.url)!r})"

    # ------------------------------------------------------------------ SQL helpers
    def us(self, column: str) -> str:
        """SQL for a time column as integer microseconds since the epoch."""
        if self.dialect == "sqlite":
            return column
        return f"(extract(epoch FROM {column}) * 1000000)::bigint"

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else _PARAM.sub(r"%(\1)s", sql)

    def _params(self, params: Params | None) -> dict[str, Any]:
        params = dict(params or {})
        if self.dialect == "sqlite":
            return {k: to_us(v) if isinstance(v, datetime) else v for k, v in params.items()}
        return params

    # ------------------------------------------------------------------ connections
    @contextmanager
    def connection(self) -> Iterator[Any]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(sqlite_path(self.url), timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        yield conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction; SQLite takes the write lock at the start (BEGIN IMMEDIATE) so a
        check-then-insert (rate limits) cannot interleave with another writer."""
        with self.connection() as conn:
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Transaction(self, conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            else:
                with conn.transaction():
                    yield Transaction(self, conn)

    # ------------------------------------------------------------------ one-shot statements
    def frame(self, sql: str, params: Params | None = None,
              schema: Schema | None = None) -> pl.DataFrame:
        with self.connection() as conn:
            return Transaction(self, conn).frame(sql, params, schema)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple]:
        with self.connection() as conn:
            return Transaction(self, conn).rows(sql, params)

    def execute(self, sql: str, params: Params | None = None) -> int:
        with self.connection() as conn:
            return Transaction(self, conn).execute(sql, params)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class Transaction:
    """Statements on one connection (inside a transaction when made by Database.transaction)."""

    def __init__(self, db: Database, conn: Any) -> None:
        self.db = db
        self.conn = conn

    def _cursor(self, sql: str, params: Params | None):
        return self.conn.execute(self.db._sql(sql), self.db._params(params))

    def rows(self, sql: str, params: Params | None = None) -> list[tuple]:
        return list(self._cursor(sql, params).fetchall())

    def execute(self, sql: str, params: Params | None = None) -> int:
        return self._cursor(sql, params).rowcount

    def frame(self, sql: str, params: Params | None = None,
              schema: Schema | None = None) -> pl.DataFrame:
        cur = self._cursor(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if schema is None:
            return pl.DataFrame(rows, schema=names, orient="row")
        if list(schema) != names:
            raise ValueError(f"query returns {names}, schema names {list(schema)}")
        raw = {n: (pl.Int64 if t == TS else t) for n, t in schema.items()}
        df = pl.DataFrame(rows, schema=raw, orient="row", strict=False)
        times = [n for n, t in schema.items() if t == TS]
        if times:
            df = df.with_columns(pl.col(n).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
                                 for n in times)
        return df


def _utc_session(conn) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
