"""A small versioned migration runner shared by both stores.

Migrations are SQL files ``NNNN_name.sql`` in ``sinks/migrations/<dialect>/``; each runs once, in
order, in its own transaction, and is recorded in ``schema_migrations``. Running it again is a
no-op, so every process may call it on start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    out = []
    for path in sorted((MIGRATIONS / dialect).glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        out.append(Migration(version, path.stem, path.read_text()))
    return out
