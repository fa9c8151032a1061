"""CSV and Parquet files to readings: the importer's, the replayer's and the evaluator's input.

Three layouts, all read with polars:

* **long**: one row per reading, columns ``ts, home_id, device_id, power_w[, energy_wh][, kind]``
  (names configurable);
* **wide** (REFIT, UK-DALE): one row per time, one column per device, e.g.
  ``--device-cols aggregate_w=mains:meter,kettle_w=kettle``; a ``--skip-flag-col`` names a boolean
  column marking rows the dataset's publisher filled in, which are dropped;
* **interval** (SGSC): one row per interval with its energy in kWh. Each becomes a reading at the
  interval start with the interval's mean power and a cumulative counter per home (including that
  interval), so the windowing computes each interval's energy exactly from counter deltas.

Naive timestamps are local time in ``tz`` (default UTC); ambiguous times (the repeated autumn
hour) take the earlier instant, nonexistent ones (the skipped spring hour) are dropped with the
count reported, since no clock ever showed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import polars as pl

from pipeline.records import DeviceKind, Reading, Source

COLUMNS = ["home_id", "device_id", "kind", "ts", "power_w", "energy_wh"]


@dataclass(frozen=True)
class DeviceColumn:
    column: str
    device_id: str
    kind: DeviceKind = DeviceKind.APPLIANCE


@dataclass(frozen=True)
class TableSpec:
    layout: str = "long"  # long | wide | interval
    ts_col: str = "ts"
    home_col: str | None = "home_id"
    home_id: str | None = None  # a fixed home when the file has no home column
    device_col: str = "device_id"
    power_col: str = "power_w"
    energy_col: str | None = "energy_wh"
    kind_col: str | None = "kind"
    device_cols: tuple[DeviceColumn, ...] = ()
    skip_flag_col: str | None = None
    interval_kwh_col: str | None = None
    interval: timedelta = timedelta(minutes=30)
    interval_end: bool = False
    tz: str = "UTC"
    dropped: list[int] = field(default_factory=list, compare=False)  # filled-in / nonexistent rows

    @classmethod
    def long(cls, **kw) -> "TableSpec":
        return cls(layout="long", **kw)


def parse_device_cols(text: str) -> tuple[DeviceColumn, ...]:
    """``col=device[:kind],col2=device2`` to device columns; ValueError names what is wrong."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"device column mapping {part!r} must look like column=device[:kind]")
        column, target = part.split("=", 1)
        device, _, kind = target.partition(":")
        try:
            out.append(DeviceColumn(column, device, DeviceKind(kind) if kind else DeviceKind.APPLIANCE))
        except ValueError:
            raise ValueError(f"unknown kind {kind!r} in {part!r} (meter, appliance, pv, battery, ev)") from None
    if not out:
        raise ValueError("the wide layout needs --device-cols column=device[:kind],... (at least one)")
    return tuple(out)


def _scan(path: Path) -> pl.LazyFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    if suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        return pl.scan_csv(path, try_parse_dates=True)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


def _require(frame: pl.LazyFrame, columns: list[str], path: Path) -> None:
    have = set(frame.collect_schema().names())
    missing = [c for c in columns if c and c not in have]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the file has {', '.join(sorted(have))}")


def _utc(expr: pl.Expr, tz: str) -> pl.Expr:
    return expr.cast(pl.Datetime("us")).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def readings_frame(path: str | Path, spec: TableSpec) -> pl.DataFrame:
    """The file as a long frame: home_id, device_id, kind, ts (UTC), power_w, energy_wh."""
    path = Path(path)
    lf = _scan(path)
    schema = lf.collect_schema()
    home = pl.lit(spec.home_id) if spec.home_id else pl.col(spec.home_col).cast(pl.Utf8)
    needed = [spec.ts_col] + ([] if spec.home_id else [spec.home_col])
    ts_col = pl.col(spec.ts_col)
    if schema.get(spec.ts_col) == pl.Utf8:
        ts_col = ts_col.str.to_datetime(time_zone=None, strict=False)
    if isinstance(schema.get(spec.ts_col), pl.Datetime) and schema[spec.ts_col].time_zone:
        ts = ts_col.dt.convert_time_zone("UTC")
    else:
        ts = _utc(ts_col, spec.tz)

    if spec.layout == "long":
        _require(lf, needed + [spec.device_col, spec.power_col], path)
        has_energy = spec.energy_col in schema
        has_kind = spec.kind_col in schema
        out = lf.select(
            home.alias("home_id"),
            pl.col(spec.device_col).cast(pl.Utf8).alias("device_id"),
            (pl.col(spec.kind_col).cast(pl.Utf8) if has_kind else pl.lit(DeviceKind.APPLIANCE.value)).alias("kind"),
            ts.alias("ts"),
            pl.col(spec.power_col).cast(pl.Float64).alias("power_w"),
            (pl.col(spec.energy_col).cast(pl.Float64) if has_energy else pl.lit(None, pl.Float64)).alias("energy_wh"),
        )
    elif spec.layout == "wide":
        if not spec.device_cols:
            raise ValueError("the wide layout needs --device-cols column=device[:kind],...")
        _require(lf, needed + [d.column for d in spec.device_cols] + [spec.skip_flag_col], path)
        if spec.skip_flag_col:
            lf = lf.filter(~pl.col(spec.skip_flag_col).cast(pl.Boolean))
        parts = [
            lf.select(home.alias("home_id"), pl.lit(d.device_id).alias("device_id"),
                      pl.lit(d.kind.value).alias("kind"), ts.alias("ts"),
                      pl.col(d.column).cast(pl.Float64).alias("power_w"),
                      pl.lit(None, pl.Float64).alias("energy_wh"))
            for d in spec.device_cols
        ]
        out = pl.concat(parts)
    elif spec.layout == "interval":
        if not spec.interval_kwh_col:
            raise ValueError("the interval layout needs --interval-kwh COLUMN")
        _require(lf, needed + [spec.interval_kwh_col], path)
        hours = spec.interval.total_seconds() / 3600
        start = ts - pl.duration(seconds=spec.interval.total_seconds()) if spec.interval_end else ts
        out = (
            lf.select(home.alias("home_id"), start.alias("ts"),
                      pl.col(spec.interval_kwh_col).cast(pl.Float64).alias("kwh"))
            .drop_nulls(["ts", "kwh"])
            .sort(["home_id", "ts"])
            .select(
                "home_id",
                pl.lit("mains").alias("device_id"),
                pl.lit(DeviceKind.METER.value).alias("kind"),
                "ts",
                (pl.col("kwh") * 1000 / hours).alias("power_w"),
                # The counter includes the interval the reading starts: the windowing credits each
                # delta to the reading's own window, so an interval's energy lands in the window
                # (and hour) where it starts. A home's first interval only sets the baseline.
                (pl.col("kwh").cum_sum().over("home_id") * 1000).alias("energy_wh"),
            )
        )
    else:
        raise ValueError(f"unknown layout {spec.layout!r} (long, wide or interval)")
    frame = out.collect()
    before = frame.height
    frame = frame.drop_nulls(["ts", "power_w", "home_id", "device_id"])
    spec.dropped.append(before - frame.height)
    return frame.sort(["ts", "home_id", "device_id"]).select(COLUMNS)


def count_rows(path: str | Path, spec: TableSpec) -> int:
    return readings_frame(path, spec).height


def frame_to_readings(frame: pl.DataFrame) -> list[Reading]:
    return [
        Reading(h, d, ts, p, e, kind=DeviceKind(k), source=Source.IMPORT)
        for h, d, k, ts, p, e in frame.select(COLUMNS).iter_rows()
    ]


def iter_reading_batches(path: str | Path, spec: TableSpec, batch_rows: int = 50_000,
                         frame: pl.DataFrame | None = None) -> Iterator[list[Reading]]:
    """Readings in time order, in batches (the frame is read once; Reading objects per batch)."""
    frame = readings_frame(path, spec) if frame is None else frame
    for offset in range(0, frame.height, batch_rows):
        yield frame_to_readings(frame.slice(offset, batch_rows))
