"""Export a store's tables to Parquet (one file per table), for analysis elsewhere."""

from __future__ import annotations

from dataclasses import asdict
from enum import Enum
from pathlib import Path

import polars as pl


def _frame(rows) -> pl.DataFrame:
    return pl.DataFrame([{k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(r).items()}
                         for r in rows])


def export_parquet(store, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("readings", store.readings()), ("device_1m", store.device_windows()),
                       ("home_1m", store.home_windows()), ("devices", store.devices())):
        path = out / f"{name}.parquet"
        _frame(rows).write_parquet(path) if rows else pl.DataFrame().write_parquet(path)
        paths.append(path)
    return paths
