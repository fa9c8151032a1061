"""Write one year of a REFIT house as a 1-minute long-format CSV with its gaps, for timing
``shems evaluate`` on a year of 1-minute data.

    .venv/bin/python tests/bench/refit_long_year.py /tmp/refit20_year_1min.csv
    time .venv/bin/shems evaluate /tmp/refit20_year_1min.csv --home-tz Europe/London --json

Each minute is the mean of the house's 30-s aggregate readings in it; rows the publisher filled
in (``aggregate_missing``) are dropped first, so holes are missing rows, not zeros. Time stamps
are written in UTC with their offset.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

SOURCE = Path("/work/shared/data/refit/refit_houses2_20_30s.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--house", default="REFIT_House20")
    p.add_argument("--start", default="2014-03-21")
    p.add_argument("--days", type=int, default=365)
    args = p.parse_args()
    start = datetime.fromisoformat(args.start)
    end = start + timedelta(days=args.days)
    minutes = (
        pl.scan_parquet(SOURCE)
        .filter((pl.col("house") == args.house) & ~pl.col("aggregate_missing")
                & (pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
        .with_columns(pl.col("timestamp").dt.replace_time_zone("Europe/London", ambiguous="earliest",
                                                              non_existent="null").dt.convert_time_zone("UTC"))
        .drop_nulls("timestamp")
        .sort("timestamp")
        .group_by_dynamic("timestamp", every="1m")
        .agg(pl.col("aggregate_w").mean().alias("power_w"))
        .select(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").alias("ts"),
                pl.lit(args.house).alias("home_id"), pl.lit("mains").alias("device_id"),
                pl.lit("meter").alias("kind"), "power_w")
        .collect()
    )
    minutes.write_csv(args.out)
    print(f"{args.out}: {minutes.height:,} minutes of {args.house} from {args.start}, {args.days} days")


if __name__ == "__main__":
    main()
