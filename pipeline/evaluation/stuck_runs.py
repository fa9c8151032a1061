"""Stuck or held readings: long runs of one exact value, which a real meter does not produce.

REFIT's PROVENANCE lists such runs (House 20 holds 445 W for 13 days; both houses hold one
value for 2 days from 2014-08-30), and SGSC homes read 0.000 kWh for weeks. They are logging
faults or fills, not load, so the evaluation does not score forecasts against them.

A run is consecutive readings of one device with the same power, with no gap longer than
``max_gap`` between them. It is stuck when it lasts at least ``min_minutes`` AND spans at least
``min_samples`` readings: an hour of identical 30-s readings is implausible, while a
half-hourly kWh meter legitimately repeats a value for a few quiet hours (so it takes 24
readings, 12 hours, there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl


@dataclass(frozen=True, slots=True)
class StuckRule:
    min_minutes: float = 60.0
    min_samples: int = 24
    max_gap: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class StuckRun:
    device_id: str
    start: datetime  # first reading of the run (UTC)
    end: datetime  # last reading of the run (UTC)
    samples: int
    power_w: float


def stuck_runs(readings: pl.DataFrame, rule: StuckRule) -> list[StuckRun]:
    """The stuck runs in one home's readings (columns device_id, ts, power_w)."""
    if readings.is_empty():
        return []
    d = readings.select("device_id", "ts", "power_w").sort("device_id", "ts")
    new_run = (
        (pl.col("power_w") != pl.col("power_w").shift(1))
        | (pl.col("device_id") != pl.col("device_id").shift(1))
        | ((pl.col("ts") - pl.col("ts").shift(1)) > rule.max_gap)
    ).fill_null(True)
    runs = (
        d.with_columns(new_run.cum_sum().alias("run"))
        .group_by("run")
        .agg(pl.col("device_id").first(), pl.col("ts").min().alias("start"),
             pl.col("ts").max().alias("end"), pl.len().alias("samples"),
             pl.col("power_w").first())
        .filter(((pl.col("end") - pl.col("start")).dt.total_seconds() >= rule.min_minutes * 60)
                & (pl.col("samples") >= rule.min_samples))
        .sort("start")
    )
    return [StuckRun(r["device_id"], r["start"], r["end"], r["samples"], r["power_w"])
            for r in runs.iter_rows(named=True)]


def excluded_slots(runs: list[StuckRun], resolution_min: int, hold: timedelta) -> set[int]:
    """UTC epoch minutes of the slots (of that length) that a stuck run touches; a run's last
    reading stands for ``hold`` after it."""
    out: set[int] = set()
    for run in runs:
        first = int(run.start.timestamp()) // 60
        last = int((run.end + hold).timestamp()) // 60 - 1
        out.update(range(first - first % resolution_min, last + 1, resolution_min))
    return out
