"""The SQLite and PostgreSQL migrations are written once per dialect (sinks/migrations/<dialect>/):
a shipped migration is never edited, so the two files of one change are kept side by side rather
than rendered from one source. What must not drift is what the code relies on: the same tables
with the same columns in the same order (the stores write positionally, ``INSERT ... VALUES`` and
``SELECT *``) and types of the same kind."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from sinks.stores import open_store

# SQLite's declared type -> the PostgreSQL types that hold the same values (times are integer
# microseconds in SQLite; money amounts are exact text there and numeric in PostgreSQL).
SAME_KIND = {
    "INTEGER": {"integer", "bigint", "boolean", "timestamp with time zone"},
    "REAL": {"double precision"},
    "TEXT": {"text", "numeric"},
}


def _migrated(url: str) -> None:
    store = open_store(url)
    try:
        store.migrate()
    finally:
        store.close()


def _sqlite_columns(url: str) -> dict[str, list[tuple[str, str]]]:
    _migrated(url)
    conn = sqlite3.connect(url[len("sqlite:///"):])
    try:
        tables = [t for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: [(row[1], row[2]) for row in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def _postgres_columns(url: str) -> dict[str, list[tuple[str, str]]]:
    _migrated(url)
    out: dict[str, list[tuple[str, str]]] = {}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
        for table, column, data_type in rows:
            out.setdefault(table, []).append((column, data_type))
    return out


@pytest.mark.parametrize("postgres", ["pg_url", "timescale_url"])
def test_both_dialects_have_the_same_tables_and_columns(postgres, sqlite_url, request):
    pg = _postgres_columns(request.getfixturevalue(postgres))
    lite = _sqlite_columns(sqlite_url)
    assert "plan_commands" in lite  # the newest migration ran
    assert sorted(pg) == sorted(lite)
    for table, columns in lite.items():
        assert [c for c, _ in pg[table]] == [c for c, _ in columns], table
        for (column, lite_type), (_, pg_type) in zip(columns, pg[table], strict=True):
            assert pg_type in SAME_KIND[lite_type], (table, column, lite_type, pg_type)
