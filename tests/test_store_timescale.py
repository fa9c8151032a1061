"""The TimescaleDB path: hypertables, compression, retention, continuous aggregates.

Runs only where a PostgreSQL with the timescaledb extension preloaded answers (see
``tests/conftest.py``: SHEMS_TEST_TIMESCALE_ADMIN_URL, default port 5433, else the main test
cluster); elsewhere it is reported as SKIPPED with the reason, never as passed. The store tests in
``test_store.py`` also run against it, proving the same query results as the plain path.
CI's PostgreSQL has no TimescaleDB. Scheduled jobs fail on some builds (PostgreSQL 15.20 with
TimescaleDB 2.28.3), so every policy job is run explicitly with CALL run_job.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipeline.records import DeviceKind, DeviceWindow, HomeWindow, Reading
from sinks.base import Batch
from sinks.stores import open_store
from tests.conftest import NO_TIMESCALE, TIMESCALE_ADMIN_URL

RECENT = (datetime.now(timezone.utc) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
OLD = RECENT - timedelta(days=200)


pytestmark = [pytest.mark.timescale, pytest.mark.skipif(TIMESCALE_ADMIN_URL is None, reason=NO_TIMESCALE)]


@pytest.fixture
def pg_url(timescale_url):
    return timescale_url


def _batch(t0: datetime) -> Batch:
    windows = [DeviceWindow("h", "m", DeviceKind.METER, t0 + timedelta(minutes=i), 100.0 + i, 90, 120, 1.7, 6)
               for i in range(180)]
    return Batch(readings=[Reading("h", "m", t0 + timedelta(seconds=10 * i), float(i)) for i in range(1000)],
                 device_windows=windows,
                 home_windows=[HomeWindow("h", w.bucket, w.mean_power_w, 90, 120, 1.7, 6) for w in windows])


def _run_all_jobs(store) -> None:
    for (job_id,) in store.conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id").fetchall():
        store.conn.execute(f"CALL run_job({job_id})")


def _hourly_by_sql(store, table: str) -> list[tuple]:
    """The hourly rollup computed from the 1-minute table directly, as the plain path does."""
    return [tuple(r) for r in store.conn.execute(
        f"SELECT home_id, date_trunc('hour', bucket), sum(mean_power_w * samples) / sum(samples), "
        f"min(min_power_w), max(max_power_w), sum(energy_wh), sum(samples)::bigint, count(*), "
        f"sum(mean_power_w) / 60.0 FROM {table} "
        f"GROUP BY 1, 2 ORDER BY 1, 2")]


def test_hypertables_compression_and_aggregates_give_the_plain_results(pg_url):
    store = open_store(pg_url)
    store.migrate()
    assert store.has_timescale
    store.write(_batch(RECENT))
    hypertables = {r[0] for r in store.conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert {"readings", "device_1m", "home_1m", "forecasts"} <= hypertables
    caggs = {r[0] for r in store.conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
    assert caggs == {"device_1h", "home_1h"}
    # Real-time aggregation: right before any refresh has run ...
    assert store.hourly("home") == _hourly_by_sql(store, "home_1m")
    _run_all_jobs(store)
    # ... and after.
    assert store.hourly("home") == _hourly_by_sql(store, "home_1m")
    assert len(store.hourly("home")) == 3 and store.hourly("home")[0][-3:-1] == (360, 60)
    # Compressed chunks still answer, and a replay into them still duplicates nothing.
    store.conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c")
    assert store.conn.execute("SELECT count(*) FROM chunk_compression_stats('readings') "
                              "WHERE compression_status = 'Compressed'").fetchone()[0] >= 1
    readings = store.readings()
    store.write(_batch(RECENT))
    assert store.readings() == readings and len(readings) == 1000
    store.close()


def test_retention_drops_old_raw_readings_and_keeps_the_aggregates(pg_url):
    store = open_store(pg_url)
    store.migrate()
    store.write(_batch(OLD))
    store.write(_batch(RECENT))
    _run_all_jobs(store)
    counts = store.counts()
    assert counts["readings"] == 1000  # only the recent ones: raw readings are kept 90 days
    assert counts["device_1m"] == counts["home_1m"] == 360  # aggregates are kept for good
    assert len(store.hourly("device")) == 6
    store.close()
