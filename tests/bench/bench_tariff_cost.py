"""How fast `with_cost` prices a year of 1-minute rows.

    .venv/bin/python tests/bench/bench_tariff_cost.py [--homes N] [--repeat R]

One year (525,600 rows) per home of synthetic 1-minute energy, priced under three books: a flat
tariff, a three-entry history ending in a two-period time-of-use tariff (Europe/London, so
every row is converted to local time), and a dynamic half-hourly price series. Prints the median
of ``--repeat`` runs per book, in rows per second, and the baseline of a plain-Python loop on a
sample (rows/s), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.energy.tariff import PriceSeries, Tariff, TariffBook, TariffKind, book_from_mapping, with_cost  # noqa: E402

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)


def year_frame(homes: int) -> pl.DataFrame:
    buckets = pl.datetime_range(START, START + timedelta(days=366), "1m", closed="left", time_zone="UTC",
                                eager=True)
    rng = np.random.default_rng(1)
    parts = [pl.DataFrame({"home_id": f"home{h}", "bucket": buckets,
                           "energy_wh": rng.gamma(2.0, 4.0, len(buckets)) - 1.0}) for h in range(homes)]
    return pl.concat(parts)


def books() -> dict[str, TariffBook]:
    flat = book_from_mapping({"currency": "GBP", "tariff": [
        {"effective_from": date(2020, 1, 1), "import_price": 0.245, "export_price": 0.05}]})
    tou = book_from_mapping({"currency": "GBP", "timezone": "Europe/London", "tariff": [
        {"effective_from": date(2020, 1, 1), "import_price": 0.245},
        {"effective_from": date(2024, 4, 1), "import_price": 0.26},
        {"effective_from": date(2024, 7, 1), "kind": "tou", "import_price": 0.28, "export_price": 0.05,
         "period": [{"name": "night", "start": "00:30", "end": "07:30", "import_price": 0.09},
                    {"name": "peak", "start": "16:00", "end": "19:00", "import_price": 0.38,
                     "days": "weekdays", "months": [10, 11, 12, 1, 2, 3]}]}]})
    steps = 366 * 48
    prices = PriceSeries(int(START.timestamp()), 1800,
                         tuple(float(p) for p in 0.2 + 0.1 * np.sin(np.arange(steps) / 48 * 2 * np.pi)))
    dynamic = TariffBook("GBP", (Tariff(START, TariffKind.DYNAMIC, "GBP", "UTC", "agile", None, 0.04,
                                        prices=prices),))
    return {"flat": flat, "tou history": tou, "dynamic 30 min": dynamic}


def python_loop_rate(frame: pl.DataFrame, book: TariffBook, rows: int = 20_000) -> float:
    """Rows/s of pricing row by row with tariff_at and zoneinfo (the obvious slow way)."""
    from zoneinfo import ZoneInfo

    sample = frame.head(rows)
    t0 = time.perf_counter()
    total = 0.0
    for home, ts, e in sample.iter_rows():
        tariff = book.tariff_at(home, ts)
        price = tariff.import_price
        if tariff.kind == TariffKind.TOU:
            wall = ts.astimezone(ZoneInfo(tariff.timezone))
            minute = wall.hour * 60 + wall.minute
            for p in tariff.periods:
                if p.start_min <= minute < p.end_min and wall.weekday() in p.days:
                    price = p.import_price
        total += e / 1000 * price
    return rows / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frame = year_frame(args.homes)
    print(f"{frame.height:,} rows ({args.homes} home(s) x 1 year of 1-minute buckets)")
    for name, book in books().items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = with_cost(frame, book)
            times.append(time.perf_counter() - t0)
        assert out["cost"].is_nan().sum() == 0
        median = statistics.median(times)
        print(f"{name:16s} median {median * 1000:8.1f} ms  = {frame.height / median / 1e6:6.2f} M rows/s"
              f"  (min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms)")
    loop = python_loop_rate(frame, books()["tou history"])
    print(f"baseline: plain-Python loop with zoneinfo {loop / 1e3:.1f} k rows/s")


if __name__ == "__main__":
    main()
