"""A store holding a large fleet for the Fleet page: N homes of five devices with a few hours of
1-minute windows, their hourly rollups, the last minutes of raw readings, the device registry,
forecasts, anomalies and dead letters, bulk-inserted straight into the tables (the flow would take
far too long to write 50,000 devices' history).

Rows are what the flow writes (``device_1m``, ``home_1m``, ``device_1h``/``home_1h`` and the
fleet's rollups computed the way the store computes them); the numbers are synthetic but
deterministic in the home's index, so a test can recompute what a page must show:

* home ``fleet-NNNNN`` (``home_id(i)``) has a meter ``mains`` and four appliances, except every
  ``NO_METER_EVERY``-th home, which has five appliances and no meter (its total is their sum);
* every ``STALE_EVERY``-th home stopped reporting ``STALE_MINUTES`` ago (its meter is silent);
* every ``ANOMALY_EVERY``-th home has one open anomaly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import psycopg

from sinks.stores import open_store

APPLIANCES = ["fridge", "kettle", "washing_machine", "heat_pump"]
NO_METER_EVERY = 10
STALE_EVERY = 7
STALE_MINUTES = 30
ANOMALY_EVERY = 33
READING_MINUTES = 10  # raw readings kept for the last minutes (one per device and minute)
DEAD_LETTERS = 50
US = 1_000_000


def home_id(i: int) -> str:
    return f"fleet-{i:05d}"


@dataclass(frozen=True)
class FleetStore:
    url: str
    now: datetime
    homes: int
    hours: float


def _devices(homes: int) -> pl.DataFrame:
    rows = []
    for i in range(homes):
        names = ([("mains", "meter")] if i % NO_METER_EVERY else [("ev_charger", "appliance")]) + \
            [(d, "appliance") for d in APPLIANCES]
        rows.extend((home_id(i), i, d, k) for d, k in names)
    return pl.DataFrame(rows, schema={"home_id": pl.Utf8, "home": pl.Int64, "device_id": pl.Utf8,
                                      "kind": pl.Utf8}, orient="row")


def frames(homes: int, hours: float, now: datetime) -> dict[str, pl.DataFrame]:
    """Every table's rows, times as UTC datetimes."""
    end = now.replace(second=0, microsecond=0) - timedelta(minutes=2)  # the newest stored minute
    n_min = int(hours * 60)
    devices = _devices(homes)
    rng = np.random.default_rng(7)
    minutes = pl.DataFrame({"bucket": pl.datetime_range(end - timedelta(minutes=n_min - 1), end,
                                                        "1m", time_zone="UTC", eager=True)})
    dm = devices.join(minutes, how="cross")
    # Stale homes stopped STALE_MINUTES ago.
    dm = dm.filter((pl.col("home") % STALE_EVERY != 0)
                   | (pl.col("bucket") <= end - timedelta(minutes=STALE_MINUTES)))
    base = {"mains": 0.0, "ev_charger": 900.0, "fridge": 80.0, "kettle": 40.0,
            "washing_machine": 60.0, "heat_pump": 500.0}
    noise = rng.uniform(0.5, 1.5, dm.height)
    dm = dm.with_columns(pl.col("device_id").replace_strict(base, return_dtype=pl.Float64)
                         .alias("b"), pl.Series("noise", noise))
    dm = dm.with_columns((pl.col("b") * pl.col("noise") * (1 + (pl.col("home") % 13) / 10))
                         .alias("mean_power_w"))
    subs = dm.filter(pl.col("kind") != "meter").group_by("home", "bucket").agg(
        pl.col("mean_power_w").sum().alias("sub_w"))
    # A meter reads its appliances plus an unmetered 100-300 W.
    dm = dm.join(subs, on=["home", "bucket"], how="left").with_columns(
        pl.when(pl.col("kind") == "meter")
        .then(pl.col("sub_w") + 100 + (pl.col("home") % 5) * 50)
        .otherwise(pl.col("mean_power_w")).round(3).alias("mean_power_w"))
    dm = dm.select("home_id", "device_id", "bucket", "kind", "mean_power_w",
                   (pl.col("mean_power_w") * 0.8).alias("min_power_w"),
                   (pl.col("mean_power_w") * 1.2).alias("max_power_w"),
                   (pl.col("mean_power_w") / 60).alias("energy_wh"), pl.lit(6).alias("samples"))
    has_meter = pl.col("kind").eq("meter").any().over("home_id", "bucket")
    hm = (dm.filter(~has_meter | (pl.col("kind") == "meter"))
          .group_by("home_id", "bucket")
          .agg(pl.col("mean_power_w").sum(), pl.col("min_power_w").sum(),
               pl.col("max_power_w").sum(), pl.col("energy_wh").sum(), pl.col("samples").max()))

    def hourly(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        return (df.group_by(*keys, pl.col("bucket").dt.truncate("1h"))
                .agg((pl.col("mean_power_w") * pl.col("samples")).sum().truediv(
                    pl.col("samples").sum()).alias("mean_power_w"),
                     pl.col("min_power_w").min(), pl.col("max_power_w").max(),
                     pl.col("energy_wh").sum(), pl.col("samples").sum(), pl.len().alias("minutes"),
                     (pl.col("mean_power_w").sum() / 60.0).alias("power_wh")))

    recent = dm.filter(pl.col("bucket") > end - timedelta(minutes=READING_MINUTES))
    readings = recent.select("home_id", "device_id",
                             (pl.col("bucket") + timedelta(seconds=30)).alias("ts"),
                             pl.col("mean_power_w").alias("power_w"),
                             pl.lit(None, pl.Float64).alias("energy_wh"),
                             pl.lit(None, pl.Float64).alias("voltage_v"),
                             pl.lit(None, pl.Float64).alias("current_a"))
    seen = dm.group_by("home_id", "device_id").agg(pl.col("kind").first(),
                                                    pl.col("bucket").min().alias("first_seen"),
                                                    (pl.col("bucket").max() + timedelta(seconds=30))
                                                    .alias("last_seen"))
    registry = seen.select("home_id", "device_id", "kind", pl.lit("native").alias("source"),
                           "first_seen", "last_seen", pl.lit(None, pl.Utf8).alias("vendor_id"),
                           pl.lit(None, pl.Int64).alias("channel"), pl.lit("UTC").alias("timezone"))
    made = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    ids = pl.DataFrame({"home_id": [home_id(i) for i in range(homes)], "home": range(homes)})
    steps = pl.DataFrame({"h": range(24)})
    forecasts = ids.join(steps, how="cross").select(
        "home_id", pl.lit(60).alias("resolution_min"), pl.lit(made).dt.replace_time_zone("UTC")
        .alias("made_at"), (pl.lit(made).dt.replace_time_zone("UTC")
                            + pl.duration(hours=pl.col("h"))).alias("target_ts"),
        ((pl.col("h") + 1) * 60).alias("horizon_min"),
        (400.0 + pl.col("home") % 50).alias("yhat_w"), pl.lit(250.0).alias("lower_w"),
        pl.lit(700.0).alias("upper_w"), pl.lit("bench").alias("model"))
    anomalies = ids.filter(pl.col("home") % ANOMALY_EVERY == 0).select(
        "home_id", pl.lit("fridge").alias("device_id"), pl.lit("long_running").alias("kind"),
        (pl.lit(now - timedelta(hours=1)) - pl.duration(minutes=pl.col("home") % 60)).alias("started_at"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("ended_at"), pl.lit(3.0).alias("score"),
        pl.lit("The fridge runs far longer than usual.").alias("message"))
    dead = pl.DataFrame({"i": range(DEAD_LETTERS)}).select(
        (pl.lit(now) - pl.duration(seconds=pl.col("i") * 60)).alias("received_at"),
        pl.format("bench/x/{}", "i").alias("topic"), pl.lit("{").alias("payload"),
        pl.lit("invalid JSON").alias("reason"), pl.format("h{}", "i").alias("payload_hash"),
        pl.lit("decode").alias("step"), pl.lit("invalid_json").alias("error"),
        pl.lit(1).alias("payload_bytes"))
    daily = hm.group_by("home_id", pl.col("bucket").dt.truncate("1d").alias("day")).agg(
        pl.col("energy_wh").sum())
    fleet = hm.group_by("bucket").agg(pl.col("mean_power_w").sum().alias("power_w"),
                                      pl.len().cast(pl.Int64).alias("homes"))
    newest = forecasts.group_by("home_id", "resolution_min").agg(pl.col("made_at").max())
    fleet_forecast = forecasts.group_by("resolution_min", "made_at", "target_ts").agg(
        pl.col("yhat_w").sum(), pl.col("lower_w").sum(), pl.col("upper_w").sum(),
        pl.len().cast(pl.Int64).alias("homes"))
    return {"devices": registry, "readings": readings, "device_1m": dm, "home_1m": hm,
            "fleet_1m": fleet, "home_1d": daily, "forecast_newest": newest,
            "fleet_forecast": fleet_forecast,
            "device_1h": hourly(dm, ["home_id", "device_id"]), "home_1h": hourly(hm, ["home_id"]),
            "forecasts": forecasts, "anomalies": anomalies, "dead_letter": dead}


def _as_us(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).dt.epoch("us") for c, t in df.schema.items()
                           if isinstance(t, pl.Datetime))


def seed_fleet(url: str, homes: int = 10_000, hours: float = 3.0,
               now: datetime | None = None) -> FleetStore:
    """Fill an empty store (migrated here) with ``homes`` homes; adds users olga (operator) and
    alice (homeowner of home 1)."""
    now = now or datetime.now(timezone.utc)
    store = open_store(url)
    store.migrate()
    store.close()
    tables = frames(homes, hours, now)
    if url.startswith("sqlite"):
        import sqlite3

        from pipeline.config import sqlite_path

        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        conn.execute("BEGIN")
        for name, df in tables.items():
            cols = ", ".join(df.columns)
            marks = ", ".join("?" * df.width)
            conn.executemany(f"INSERT INTO {name} ({cols}) VALUES ({marks})", _as_us(df).iter_rows())
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            for name, df in tables.items():
                buf = io.BytesIO()
                df.write_csv(buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.f%z",
                             null_value="\\N")
                with conn.cursor() as cur, cur.copy(
                        f"COPY {name} ({', '.join(df.columns)}) FROM STDIN "
                        "WITH (FORMAT csv, NULL '\\N')") as copy:
                    copy.write(buf.getvalue())
            conn.execute("VACUUM ANALYZE")
    from ui.accounts import Accounts
    from ui.auth import Role
    from ui.db import Database

    db = Database(url, migrate=False)
    try:
        accounts = Accounts(db)
        accounts.add_user("olga", "olga-secret-12", Role.OPERATOR, by="bench")
        accounts.add_user("alice", "alice-secret-1", Role.HOMEOWNER, [home_id(1)], by="bench")
    finally:
        db.close()
    return FleetStore(url, now, homes, hours)
