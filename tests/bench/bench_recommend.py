"""Cost of the recommendation state: per window, per daily evaluation, and its snapshot size.

    .venv/bin/python tests/bench/bench_recommend.py

Feeds the REFIT House 2 fixture (4 weeks of 1-minute windows: four appliances and the home total,
201,600 windows) through one ``HomeRecommender`` under a time-of-use tariff. The windows are built
before the clock starts, so the numbers are the state's own cost.
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.energy.tariff import book_from_mapping  # noqa: E402
from pipeline.insights.recommend import HomeRecommender  # noqa: E402
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "refit_house2_4weeks_1min.parquet"
DEVICES = ("kettle", "dishwasher", "washing_machine", "microwave")


def main() -> None:
    book = book_from_mapping({"currency": "GBP", "timezone": "Europe/London", "tariff": [
        {"effective_from": date(2014, 1, 1), "kind": "tou", "import_price": 0.28, "export_price": 0.05,
         "period": [{"name": "night", "start": "00:30", "end": "07:30", "import_price": 0.09},
                    {"name": "peak", "start": "16:00", "end": "19:00", "import_price": 0.38,
                     "days": "weekdays"}]}]})
    windows = []
    for row in pl.read_parquet(FIXTURE).iter_rows(named=True):
        for d in DEVICES:
            p = float(row[f"{d}_w"])
            windows.append(DeviceWindow("h", d, DeviceKind.APPLIANCE, row["ts"], p, p, p, p / 60, 2))
        if row["aggregate_w"] is not None:
            a = float(row["aggregate_w"])
            windows.append(HomeWindow("h", row["ts"], a, a, a, a / 60, 2))
    rec = HomeRecommender("h")
    emitted = 0
    t0 = time.perf_counter()
    for w in windows:
        if isinstance(w, DeviceWindow):
            emitted += len(rec.add_device_window(w, book))
        else:
            emitted += len(rec.add_home_window(w, book))
    total = time.perf_counter() - t0
    evals = []
    end = datetime(2014, 10, 12, 23, tzinfo=timezone.utc)
    for _ in range(5):
        t1 = time.perf_counter()
        rec.evaluate(end, book)
        evals.append(time.perf_counter() - t1)
    print(f"{len(windows):,} windows in {total:.2f} s = {total / len(windows) * 1e6:.1f} us per window "
          f"(including {emitted} recommendations from 21 daily evaluations)")
    print(f"one daily evaluation (30 days, 4 devices, ~50 runs): median {statistics.median(evals) * 1000:.0f} ms")
    print(f"pickled state: {len(pickle.dumps(rec)) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
