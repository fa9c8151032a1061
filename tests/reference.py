"""An independent polars computation of the 1-minute aggregates, for checking what the flow stored.

It implements the definitions in ``pipeline/windowing.py`` and ``pipeline/home_total.py``
vectorised, without importing them; only the counter glitch/reset rule walks each device's
counter values in a small Python loop, because it looks one sample ahead.
It assumes the input is complete and none of it was late.
"""

from __future__ import annotations

import polars as pl

from pipeline.settings import WindowSettings

DEVICE_COLUMNS = ["home_id", "device_id", "kind", "bucket", "mean_power_w", "min_power_w",
                  "max_power_w", "energy_wh", "samples"]
HOME_COLUMNS = ["home_id", "bucket", "mean_power_w", "min_power_w", "max_power_w", "energy_wh",
                "samples"]


def _counter_walk(counters: list[float | None]) -> tuple[list[float], list[int]]:
    """Energy and reset flag per sample from a counter: deltas, glitches ignored, resets counted
    from zero (the second sample in a row below the last trusted value is the reset)."""
    energy: list[float] = []
    resets: list[int] = []
    baseline: float | None = None
    held = False
    for c in counters:
        e, reset = 0.0, 0
        if c is None:
            pass
        elif baseline is None:
            baseline = c
        elif c >= baseline:
            e, baseline, held = c - baseline, c, False
        elif not held:
            held = True
        else:
            e, baseline, held, reset = c, c, False, 1
        energy.append(e)
        resets.append(reset)
    return energy, resets


def _counter_energy(counters: list[float | None]) -> list[float]:
    return _counter_walk(counters)[0]


def device_minutes(readings: pl.DataFrame, settings: WindowSettings = WindowSettings()) -> pl.DataFrame:
    df = readings
    if "energy_wh" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Float64).alias("energy_wh"))
    if "kind" not in df.columns:
        df = df.with_columns(pl.lit("appliance").alias("kind"))
    df = (
        df.with_columns(pl.col("ts").dt.convert_time_zone("UTC"),
                        pl.col("energy_wh").cast(pl.Float64), pl.col("power_w").cast(pl.Float64))
        .unique(["home_id", "device_id", "ts"], keep="first", maintain_order=True)
        .sort(["home_id", "device_id", "ts"])
    )
    dt = (pl.col("ts") - pl.col("ts").shift(1).over(["home_id", "device_id"])).dt.total_microseconds() / 1e6
    df = df.with_columns(
        pl.when(dt.is_not_null() & (dt > 0) & (dt <= settings.max_gap_s))
        .then(pl.col("power_w").shift(1).over(["home_id", "device_id"]) * dt / 3600.0)
        .otherwise(0.0)
        .alias("power_energy"),
        pl.col("ts").dt.truncate(f"{settings.window_s}s").alias("bucket"),
    )
    counter_energy: list[float] = []
    for _, part in df.group_by(["home_id", "device_id"], maintain_order=True):
        counter_energy.extend(_counter_energy(part["energy_wh"].to_list()))
    df = df.with_columns(pl.Series("counter_energy", counter_energy, pl.Float64)).with_columns(
        pl.when(pl.col("energy_wh").is_not_null())
        .then(pl.col("counter_energy"))
        .otherwise(pl.col("power_energy"))
        .alias("sample_energy")
    )
    return (
        df.group_by(["home_id", "device_id", "kind", "bucket"])
        .agg(
            pl.col("power_w").mean().alias("mean_power_w"),
            pl.col("power_w").min().alias("min_power_w"),
            pl.col("power_w").max().alias("max_power_w"),
            pl.col("sample_energy").sum().alias("energy_wh"),
            pl.len().cast(pl.Int64).alias("samples"),
        )
        .select(DEVICE_COLUMNS)
        .sort(["home_id", "device_id", "bucket"])
    )


def home_minutes(device_minutes_df: pl.DataFrame) -> pl.DataFrame:
    """Meters when the home has any, else every device; sums per bucket."""
    df = device_minutes_df.with_columns(
        (pl.col("kind") == "meter").any().over("home_id").alias("home_has_meter")
    ).filter(~pl.col("home_has_meter") | (pl.col("kind") == "meter"))
    return (
        df.group_by(["home_id", "bucket"])
        .agg(
            pl.col("mean_power_w").sum(),
            pl.col("min_power_w").sum(),
            pl.col("max_power_w").sum(),
            pl.col("energy_wh").sum(),
            pl.col("samples").sum(),
        )
        .select(HOME_COLUMNS)
        .sort(["home_id", "bucket"])
    )


def device_counter_resets(readings: pl.DataFrame, settings: WindowSettings = WindowSettings()) -> pl.DataFrame:
    """Counter resets per device minute: home_id, device_id, bucket, counter_resets."""
    df = (
        readings.with_columns(pl.col("ts").dt.convert_time_zone("UTC"), pl.col("energy_wh").cast(pl.Float64))
        .unique(["home_id", "device_id", "ts"], keep="first", maintain_order=True)
        .sort(["home_id", "device_id", "ts"])
    )
    flags: list[int] = []
    for _, part in df.group_by(["home_id", "device_id"], maintain_order=True):
        flags.extend(_counter_walk(part["energy_wh"].to_list())[1])
    return (
        df.with_columns(pl.Series("reset", flags, pl.Int64),
                        pl.col("ts").dt.truncate(f"{settings.window_s}s").alias("bucket"))
        .group_by(["home_id", "device_id", "bucket"])
        .agg(pl.col("reset").sum().alias("counter_resets"))
        .sort(["home_id", "device_id", "bucket"])
    )
