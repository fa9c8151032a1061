"""Database cost per reading: rows, bytes (raw and TimescaleDB-compressed) and write time.

Writes what the flow writes for --devices devices (5 per home) reporting every --interval seconds
for --hours hours, through the store's own ``write`` (the flow's sink path: readings, device and
home minutes, the hourly rollups), in batches of --batch readings, into fresh databases on plain
PostgreSQL (the shared cluster) and, when one answers on SHEMS_TEST_TIMESCALE_ADMIN_URL (default
port 5433), TimescaleDB, where the chunks are then compressed as the policy would. Prints a table
and one JSON line per store. Numbers for docs/SCALING.md.

    .venv/bin/python -m tests.bench.bench_storage --devices 200 --hours 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg

from pipeline.records import DeviceKind, DeviceWindow, HomeWindow, Reading, Source
from sinks.base import Batch
from sinks.stores import open_store
from tests.conftest import PG_ADMIN_URL, TIMESCALE_ADMIN_URL

TABLES = ("readings", "device_1m", "home_1m", "device_1h", "home_1h")


def batches(devices: int, hours: float, interval_s: int, batch: int, start: datetime):
    """The flow's output for the period, in write batches: readings with the minutes they close."""
    homes = max(1, devices // 5)
    steps = int(hours * 3600 / interval_s)
    per_minute = max(1, 60 // interval_s)
    pending = Batch()
    for step in range(steps):
        ts = start + timedelta(seconds=step * interval_s)
        for d in range(devices):
            home = f"home-{d % homes:05d}"
            power = 100.0 + (d * 37 + step * 11) % 900
            pending.readings.append(Reading(home, f"dev-{d:05d}", ts, power, 1000.0 + step * power / 360,
                                            230.0, power / 230, DeviceKind.APPLIANCE, Source.NATIVE))
        if (step + 1) % per_minute == 0:
            bucket = ts.replace(second=0)
            for d in range(devices):
                home = f"home-{d % homes:05d}"
                pending.device_windows.append(DeviceWindow(home, f"dev-{d:05d}", DeviceKind.APPLIANCE, bucket,
                                                           500.0, 100.0, 990.0, 8.3, per_minute))
            for h in range(homes):
                pending.home_windows.append(HomeWindow(f"home-{h:05d}", bucket, 2500.0, 500.0, 4950.0, 41.6,
                                                       per_minute * 5))
        if len(pending.readings) >= batch:
            yield pending
            pending = Batch()
    if pending.readings:
        yield pending


def measure(admin_url: str, label: str, args) -> dict:
    name = f"shems_storage_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = psycopg.conninfo.conninfo_to_dict(admin_url)
    url = f"postgresql://{parts.get('user', 'postgres')}@{parts['host']}:{parts['port']}/{name}"
    try:
        store = open_store(url)
        store.migrate()
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
        per_reading_us = []
        readings = 0
        t_all = time.perf_counter()
        for b in batches(args.devices, args.hours, args.interval, args.batch, start):
            t0 = time.perf_counter()
            store.write(b)
            per_reading_us.append((time.perf_counter() - t0) / len(b.readings) * 1e6)
            readings += len(b.readings)
            print(f"{label}: {readings:,} readings written", file=sys.stderr, end="\r")
        elapsed = time.perf_counter() - t_all
        print(file=sys.stderr)
        result = {"store": label, "readings": readings, "write_us_per_reading_median": statistics.median(per_reading_us),
                  "write_readings_per_s": readings / elapsed}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            sizes = {}
            for table in TABLES:
                if store.has_timescale and table in ("readings", "device_1m", "home_1m"):
                    sizes[table] = conn.execute("SELECT hypertable_size(%s)", (table,)).fetchone()[0]
                elif store.has_timescale:
                    sizes[table] = conn.execute(
                        "SELECT hypertable_size(format('%%I.%%I', materialization_hypertable_schema, "
                        "materialization_hypertable_name)::regclass) FROM timescaledb_information.continuous_aggregates "
                        "WHERE view_name = %s", (table,)).fetchone()[0]
                else:
                    sizes[table] = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0]
            result["bytes"] = sizes
            result["bytes_per_reading_all_tables"] = sum(sizes.values()) / readings
            result["bytes_per_reading_readings_table"] = sizes["readings"] / readings
            if store.has_timescale:
                t0 = time.perf_counter()
                conn.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c")
                result["compress_s"] = time.perf_counter() - t0
                compressed = conn.execute("SELECT hypertable_size('readings')").fetchone()[0]
                result["bytes_per_reading_readings_compressed"] = compressed / readings
                result["compression_ratio"] = sizes["readings"] / compressed
        store.close()
        return result
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--interval", type=int, default=10, help="seconds between a device's readings")
    parser.add_argument("--batch", type=int, default=5000, help="readings per write (the flow's --batch-rows)")
    args = parser.parse_args(argv)
    targets = [("postgresql", PG_ADMIN_URL)]
    if TIMESCALE_ADMIN_URL and TIMESCALE_ADMIN_URL != PG_ADMIN_URL:
        targets.append(("timescaledb", TIMESCALE_ADMIN_URL))
    else:
        print("no TimescaleDB cluster: compressed sizes NOT measured", file=sys.stderr)
    for label, admin in targets:
        result = measure(admin, label, args)
        print(f"{label}: {result['readings']:,} readings, {result['write_us_per_reading_median']:.1f} µs/reading "
              f"to write (median batch), {result['bytes_per_reading_all_tables']:.0f} B/reading in all tables, "
              f"readings table {result['bytes_per_reading_readings_table']:.0f} B"
              + (f", compressed {result['bytes_per_reading_readings_compressed']:.1f} B "
                 f"(x{result['compression_ratio']:.1f})" if "compression_ratio" in result else ""),
              file=sys.stderr)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
