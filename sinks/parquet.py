"""Export a store's tables to Parquet (one file per table), for analysis elsewhere.

The tables are read and written a batch at a time (one Parquet row group each), so a store of
any size exports in the memory of a batch; the columns are the records' fields, typed from the
record classes, so a batch whose optional column is empty has the same schema as the rest."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import astuple, fields
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

import polars as pl
import pyarrow.parquet as pq

from pipeline.records import DeviceInfo, DeviceWindow, HomeWindow, Reading

EXPORTED = {"readings": Reading, "device_1m": DeviceWindow, "home_1m": HomeWindow, "devices": DeviceInfo}
_POLARS_TYPES: dict[type, pl.DataType] = {str: pl.String(), float: pl.Float64(), int: pl.Int64(),
                                           bool: pl.Boolean(), datetime: pl.Datetime("us", "UTC")}


def schema(record: type) -> dict[str, pl.DataType]:
    """Column name -> Parquet type of each field of a record class, in the fields' order (that of
    ``astuple``), enums as their text."""
    hints = get_type_hints(record)
    out: dict[str, pl.DataType] = {}
    for f in fields(record):
        hint = hints[f.name]
        if get_origin(hint) in (Union, types.UnionType):  # `float | None`: the column is nullable anyway
            hint = next(a for a in get_args(hint) if a is not type(None))
        out[f.name] = pl.String() if isinstance(hint, type) and issubclass(hint, Enum) else _POLARS_TYPES[hint]
    return out


def _frame(records: list, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    rows = [tuple(v.value if isinstance(v, Enum) else v for v in astuple(r)) for r in records]
    return pl.DataFrame(rows, schema=columns, orient="row")


def export_parquet(store, out_dir: str | Path, on_batch: Callable[[str, int], None] = lambda table, n: None,
                   batch_rows: int = 50_000) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for table, record in EXPORTED.items():
        columns = schema(record)
        path = out / f"{table}.parquet"
        # Written beside its place and moved there whole: a store lost mid-export left a readable
        # file that held part of the table (550,000 of 2,000,000 readings) and looked complete.
        partial = path.with_name(f"{path.name}.partial")
        empty = _frame([], columns).to_arrow()
        try:
            with pq.ParquetWriter(partial, empty.schema) as writer:
                written = 0
                for records in store.export_batches(table, batch_rows):
                    writer.write_table(_frame(records, columns).to_arrow())
                    written += len(records)
                    on_batch(table, written)
                if not written:
                    writer.write_table(empty)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        paths.append(path)
    return paths
