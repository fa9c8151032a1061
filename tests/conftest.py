"""Shared fixtures: every test gets its own PostgreSQL database and its own MQTT topic prefix,
so two runs (or two tests) never see each other's data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

PG_ADMIN_URL = os.environ.get("SHEMS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("SHEMS_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("SHEMS_TEST_MQTT_PORT", "1883"))
FIXTURES = Path(__file__).parent / "fixtures"


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = _unique("shems_test")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _timescale_admin_url() -> str | None:
    """The admin URL of a PostgreSQL that can create the timescaledb extension, or None."""
    candidates = [os.environ.get("SHEMS_TEST_TIMESCALE_ADMIN_URL",
                                 "postgresql://postgres@127.0.0.1:5433/postgres"), PG_ADMIN_URL]
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                ok = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name='timescaledb') "
                    "AND current_setting('shared_preload_libraries') ~ 'timescaledb'").fetchone()[0]
        except psycopg.OperationalError:
            continue
        if ok:
            return url
    return None


TIMESCALE_ADMIN_URL = _timescale_admin_url()
NO_TIMESCALE = ("no PostgreSQL with the timescaledb extension preloaded "
                "(SHEMS_TEST_TIMESCALE_ADMIN_URL, default port 5433): TimescaleDB path NOT tested")


@pytest.fixture
def timescale_url():
    """A fresh database in a TimescaleDB-enabled cluster, dropped afterwards; skips without one."""
    if TIMESCALE_ADMIN_URL is None:
        pytest.skip(NO_TIMESCALE)
    name = _unique("shems_tsdb")
    with psycopg.connect(TIMESCALE_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield TIMESCALE_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(TIMESCALE_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shems.db'}"


@pytest.fixture(params=["sqlite", "postgres", "timescale"])
def store_url(request, tmp_path: Path) -> str:
    """Run a test against every store: SQLite, plain PostgreSQL, and PostgreSQL with TimescaleDB
    (reported as skipped where no TimescaleDB cluster runs)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shems.db'}"
    if request.param == "timescale":
        return request.getfixturevalue("timescale_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def mqtt_url() -> str:
    return f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


@pytest.fixture
def topic_prefix() -> str:
    """A topic root no other test or run uses; the flow strips it before decoding."""
    return f"shems-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def store(store_url):
    """A migrated store of every kind (see ``store_url``), closed afterwards."""
    from sinks.stores import open_store

    s = open_store(store_url)
    s.migrate()
    yield s
    s.close()
