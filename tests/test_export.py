"""`shems export`: every table a batch at a time into Parquet, against both stores.

Before, the whole readings table was read into Python records at once (3 million readings: 2.3
GB of memory); now it streams in batches (191 MB for the same store, see the note of stop 21).
These tests export with tiny batches so that many row groups are written, and check the files
hold exactly what the store holds, with one schema even where an optional column is empty in
the first batch and filled in a later one."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import astuple
from datetime import datetime, timedelta, timezone
from enum import Enum

import polars as pl
import pyarrow.parquet as pq

from pipeline.records import DeviceKind, DeviceWindow, HomeWindow, Reading, Source
from sinks.base import Batch
from sinks.parquet import EXPORTED, export_parquet
from sinks.stores import open_store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _batch() -> Batch:
    readings = [Reading(f"h{i % 2}", f"d{i % 3}", T0 + timedelta(seconds=10 * i), 100.0 + i,
                        energy_wh=None if i < 5 else 1000.0 + i,  # empty in the first batches
                        voltage_v=None if i < 7 else 230.5, current_a=None,
                        kind=DeviceKind.METER if i % 3 == 0 else DeviceKind.APPLIANCE, source=Source.NATIVE)
                for i in range(11)]
    device_windows = [DeviceWindow(f"h{i % 2}", "d0", DeviceKind.METER, T0 + timedelta(minutes=i),
                                   50.0 + i, 40.0, 60.0, 0.8, 6) for i in range(5)]
    home_windows = [HomeWindow(f"h{i % 2}", T0 + timedelta(minutes=i), 70.0, 60.0, 80.0, 1.2, 6) for i in range(5)]
    return Batch(readings=readings, device_windows=device_windows, home_windows=home_windows)


def _as_rows(records) -> list[tuple]:
    return [tuple(v.value if isinstance(v, Enum) else v for v in astuple(r)) for r in records]


def test_every_table_exports_whole_in_many_row_groups(store_url, tmp_path):
    store = open_store(store_url)
    store.migrate()
    try:
        store.write(_batch())
        seen = []
        paths = export_parquet(store, tmp_path / "out", on_batch=lambda table, n: seen.append((table, n)),
                               batch_rows=2)
        expected = {"readings": store.readings(), "device_1m": store.device_windows(),
                    "home_1m": store.home_windows(), "devices": store.devices()}
    finally:
        store.close()
    assert [p.name for p in paths] == [f"{t}.parquet" for t in EXPORTED]
    for path in paths:
        table = path.stem
        frame = pl.read_parquet(path)
        assert frame.rows() == _as_rows(expected[table]), table
        assert len(expected[table]) > 2 and pq.ParquetFile(path).num_row_groups == -(-len(expected[table]) // 2)
    readings = pl.read_parquet(tmp_path / "out" / "readings.parquet")
    assert readings.schema["energy_wh"] == pl.Float64 and readings.schema["ts"] == pl.Datetime("us", "UTC")
    assert readings["energy_wh"].null_count() == 5 and readings["voltage_v"].drop_nulls().to_list() == [230.5] * 4
    assert ("readings", 11) in seen  # progress is told the rows written so far


def test_an_empty_store_exports_empty_files_with_the_columns(sqlite_url, tmp_path):
    store = open_store(sqlite_url)
    store.migrate()
    store.close()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--store-url", sqlite_url,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "out" / f"{t}.parquet") for t in EXPORTED]
    readings = pl.read_parquet(tmp_path / "out" / "readings.parquet")
    assert readings.height == 0 and readings.columns == ["home_id", "device_id", "ts", "power_w", "energy_wh",
                                                          "voltage_v", "current_a", "kind", "source"]


def test_a_store_lost_mid_export_leaves_no_partial_file_and_the_last_export_whole(pg_url, tmp_path):
    """The export's own backend is ended after its first batch (what a database restart does to
    it): the export fails, and no file holds part of the table; the export made before it stays."""
    import psycopg
    import pytest

    store = open_store(pg_url)
    store.migrate()
    try:
        store.write(_batch())
        out = tmp_path / "out"
        export_parquet(store, out, batch_rows=2)
        before = {p.name: p.read_bytes() for p in out.iterdir()}

        def lose_the_backend(table: str, rows: int) -> None:
            if table == "readings" and rows == 2:
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (store.conn.info.backend_pid,))

        with pytest.raises(psycopg.OperationalError):
            export_parquet(store, out, on_batch=lose_the_backend, batch_rows=2)
    finally:
        store.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, no *.partial
