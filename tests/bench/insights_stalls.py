"""Where the insights step stalls the stream: CPU seconds per event minute for a fleet of homes.

The flow runs every home's insights on one worker, so work that all homes do at the same event
minute (an hour boundary, local midnight) holds back every reading behind it. This feeds
``HomeInsights`` directly (no broker, no store) with the 1-minute device and home windows of
``--homes`` homes of 5 devices and prints the time each event minute took, worst first.

    .venv/bin/python tests/bench/insights_stalls.py --homes 2000 --hours 3

It runs twice, in turn, so the ratio comes from one run on one machine: "at the boundary", every
home doing its hourly forecasting and its daily recommendations in the same event minute (both
spreads 0, what the flow did before ``ForecastSettings.issue_spread_min`` and
``RecommendSettings.evaluate_spread_min``), then "staggered", the shipped defaults.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.energy.tariff import TariffBook, book_from_toml
from pipeline.insights.forecast import ForecastSettings
from pipeline.insights.forecast.home import HourCloser
from pipeline.insights.step import HomeForecasts, HomeInsights, InsightSettings, run_both
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow
from pipeline.settings import RecommendSettings


def _windows(home: str, bucket: datetime, rng: random.Random) -> list[DeviceWindow | HomeWindow]:
    hour = bucket.hour + bucket.minute / 60
    out: list[DeviceWindow | HomeWindow] = []
    total = 0.0
    for d in range(5):
        power = max(0.0, 80 + 300 * (d == 0) * (1 + math.sin(hour / 24 * 2 * math.pi)) + rng.gauss(0, 20))
        total += power
        out.append(DeviceWindow(home, f"{home}-d{d}", DeviceKind.APPLIANCE, bucket, power, power * 0.9,
                                power * 1.1, power / 60, 6))
    out.append(HomeWindow(home, bucket, total, total * 0.9, total * 1.1, total / 60, 6))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--start", default="2026-11-24T22:40:00+00:00",
                        help="first event minute (UTC); the default crosses midnight and two hours")
    parser.add_argument("--tariffs", default=str(Path(__file__).parents[2] / "deploy/tariffs.example.toml"),
                        help="tariff book (the recommender runs only where prices are known); '' for none")
    parser.add_argument("--only", choices=("boundary", "staggered"), help="run one of the two")
    args = parser.parse_args()
    start = datetime.fromisoformat(args.start).astimezone(timezone.utc)
    book = book_from_toml(args.tariffs) if args.tariffs else None
    worst = {}
    for mode in [args.only] if args.only else ["boundary", "staggered"]:
        worst[mode] = _run(args.homes, args.hours, start, mode == "staggered", book)
    if len(worst) > 1:
        print(f"worst minute, staggered / at the boundary: {worst['staggered'] / worst['boundary']:.2f}")


def _run(homes_count: int, hours: float, start: datetime, staggered: bool, book: TariffBook | None) -> float:
    rng = random.Random(0)
    settings = InsightSettings() if staggered else InsightSettings(recommend=RecommendSettings(evaluate_spread_min=0))
    homes = {}
    forecasts: dict[str, HomeForecasts | None] = {}
    for i in range(homes_count):
        insights = homes[f"h{i}"] = HomeInsights(f"h{i}", "Europe/London", settings)
        if not staggered:
            insights.hours = HourCloser(f"h{i}", ForecastSettings(timezone="Europe/London", issue_spread_min=0))
    per_minute: list[tuple[float, datetime, int]] = []
    for m in range(int(hours * 60)):
        bucket = start + timedelta(minutes=m)
        produced = 0
        began = time.perf_counter()
        for home, insights in homes.items():
            for window in _windows(home, bucket, rng):
                out, forecasts[home] = run_both(insights, forecasts.get(home), window, book, None)
                produced += len(out)
        per_minute.append((time.perf_counter() - began, bucket, produced))
    seconds = [s for s, _, _ in per_minute]
    print(f"{'staggered' if staggered else 'at the boundary'}: {homes_count} homes, {len(per_minute)} event minutes: total {sum(seconds):.1f} s, median {statistics.median(seconds):.3f} s, "
          f"p99 {sorted(seconds)[int(0.99 * (len(seconds) - 1))]:.3f} s, max {max(seconds):.3f} s per minute")
    for spent, bucket, produced in sorted(per_minute, reverse=True)[:5]:
        print(f"  {bucket:%Y-%m-%d %H:%M} UTC  {spent:.3f} s  {produced} records")
    return max(seconds)


if __name__ == "__main__":
    main()
