"""Dynamic tariffs' price files: CSV or Parquet, ``ts, import_price[, export_price]`` on a
regular 15-, 30- or 60-minute grid, read once into a ``PriceSeries``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.energy.tariff.model import _DYNAMIC_STEPS_S, PriceSeries, _iso, _parse_times, _utc_series


def load_price_file(path: str | Path) -> PriceSeries:
    """A dynamic price file: ``ts, import_price[, export_price]`` on a regular 15/30/60-min grid."""
    path = Path(path)
    try:
        frame = pl.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pl.read_csv(
            path, try_parse_dates=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ValueError(f"cannot read price file {path}: {exc}") from None
    missing = {"ts", "import_price"} - set(frame.columns)
    if missing:
        raise ValueError(f"price file {path} needs the columns ts, import_price[, export_price]; "
                         f"missing {sorted(missing)}")
    if frame.height == 0:
        raise ValueError(f"price file {path} has no rows")
    ts = frame["ts"]
    if ts.dtype == pl.String:
        try:
            ts = _parse_times(ts)
        except pl.exceptions.PolarsError:
            raise ValueError(f"price file {path}: ts must be ISO times, e.g. 2024-01-01T00:00:00Z") from None
    if not isinstance(ts.dtype, pl.Datetime):
        raise ValueError(f"price file {path}: ts must be a time, not {ts.dtype}")
    secs = _utc_series(ts).dt.epoch("s").to_numpy()
    steps = np.diff(secs)
    if len(secs) > 1:
        if (steps <= 0).any():
            bad = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise ValueError(f"price file {path}: times must increase (row {bad + 1})")
        step = int(steps[0])
        if step not in _DYNAMIC_STEPS_S:
            raise ValueError(f"price file {path}: step {step // 60} min; use 15, 30 or 60 minutes")
        if (steps != step).any():
            bad = int(np.flatnonzero(steps != step)[0]) + 1
            raise ValueError(f"price file {path}: irregular step at row {bad + 1} "
                             f"({_iso(int(secs[bad]))}); every step must be {step // 60} min")
    else:
        step = 3600
    series = {}
    for col in ("import_price", "export_price"):
        if col not in frame.columns:
            continue
        try:
            values = frame[col].cast(pl.Float64).to_numpy()
        except pl.exceptions.PolarsError:
            raise ValueError(f"price file {path}: {col} must be numbers") from None
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"price file {path}: {col} is missing or not finite at row {bad + 1}")
        series[col] = tuple(float(v) for v in values)
    return PriceSeries(int(secs[0]), step, series["import_price"], series.get("export_price"))
