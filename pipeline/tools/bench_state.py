"""`shems bench state`: what one home's insights state costs, in a snapshot, in memory and in time.

Feeds a home's two insights states (``HomeInsights``: anomaly detectors, recommender, the open
hour; ``HomeForecasts``: the forecasting history and models, fed once an hour) for ``homes`` homes
of five devices (a mains meter and four appliances) under the demo's time-of-use tariff with
``days`` days of 1-minute windows, in the order the flow hands them over (per minute: the device
windows, then the home's total), and reports:

* ``bytes_per_home_snapshot``: ``pickle.dumps`` of both states per home, what the recovery store
  keeps (``flows.logic._GuardedLogic.dump``);
* ``bytes_per_home_epoch``: of the insights state alone, what a recovery epoch rewrites for a home
  that sent a minute (the forecasts state is rewritten only in the epoch an hour closes);
* ``bytes_per_home_memory``: what the states hold once restored from those snapshots (the traced
  allocations of ``pickle.loads``, tracemalloc), per home;
* ``us_per_window``: wall time of feeding one window through both states (the windows are built
  first);
* ``us_per_snapshot``: wall time of ``pickle.dumps`` of the insights state per home (what a
  recovery epoch pays for every home that changed); ``us_per_hourly_snapshot``: of the forecasts
  state, paid once an hour.

The data is the bundled day of REFIT House 2 (``pipeline/data/sample_home.parquet``, 30 s), as
1-minute windows; each further day and home takes it with each device's day rotated by a seeded
random shift (appliances up to 3 h, the mains up to 30 min) and the mains scaled by 0.8-1.2, so
homes and days differ as real ones do without leaving the home's own habits.
"""

from __future__ import annotations

import gc
import json
import pickle
import time
import tracemalloc
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.energy.tariff import TariffBook, book_from_toml
from pipeline.insights.step import HomeForecasts, HomeInsights, run_both
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "sample_home.parquet"
TARIFFS = DATA / "demo_tariffs.toml"
TIMEZONE = "Europe/London"
START = datetime(2014, 3, 3, tzinfo=timezone.utc)  # a Monday; 30 days cross the spring DST change


@dataclass(frozen=True, slots=True)
class StateBenchResult:
    homes: int
    days: int
    bytes_per_home_snapshot: int  # both states
    bytes_per_home_memory: int
    us_per_window: float
    us_per_snapshot: float  # pickle.dumps of the insights state, what each recovery epoch costs a home
    bytes_per_home_epoch: int  # the insights state, rewritten in every epoch the home sent a minute
    us_per_hourly_snapshot: float  # pickle.dumps of the forecasts state, once an hour


def _sample_day() -> dict[str, tuple[DeviceKind, np.ndarray]]:
    """Each device's 1,440 minute means (W) of the bundled day."""
    frame = pl.read_parquet(SAMPLE)
    day0 = frame["ts"].min()
    out: dict[str, tuple[DeviceKind, np.ndarray]] = {}
    for (device_id, kind), rows in frame.group_by(["device_id", "kind"], maintain_order=True):
        minute = ((rows["ts"] - day0).dt.total_seconds() // 60).to_numpy()
        sums = np.bincount(minute, weights=rows["power_w"].to_numpy(), minlength=1440)[:1440]
        counts = np.bincount(minute, minlength=1440)[:1440]
        out[str(device_id)] = (DeviceKind(kind), sums / np.maximum(counts, 1))
    return dict(sorted(out.items()))


def home_windows(home: int, days: int, sample: dict[str, tuple[DeviceKind, np.ndarray]]
                 ) -> list[DeviceWindow | HomeWindow]:
    """One home's windows, minute by minute: its devices' windows, then its total (the mains)."""
    rng = np.random.default_rng(home)
    home_id = f"bench-home-{home:06d}"
    per_device: dict[str, tuple[DeviceKind, np.ndarray]] = {}
    for device_id, (kind, day) in sample.items():
        meter = kind == DeviceKind.METER
        chunks = []
        for _ in range(days):
            shift = int(rng.integers(-30, 31) if meter else rng.integers(-180, 181))
            scale = float(rng.uniform(0.8, 1.2)) if meter else 1.0
            chunks.append(np.roll(day, shift) * scale)
        per_device[device_id] = (kind, np.round(np.concatenate(chunks), 1))
    mains = next(d for d, (k, _) in per_device.items() if k == DeviceKind.METER)
    out: list[DeviceWindow | HomeWindow] = []
    for m in range(days * 1440):
        bucket = START + timedelta(minutes=m)
        for device_id, (kind, values) in per_device.items():
            p = float(values[m])
            out.append(DeviceWindow(home_id, device_id, kind, bucket, p, p, p, p / 60, 2))
        p = float(per_device[mains][1][m])
        out.append(HomeWindow(home_id, bucket, p, p, p, p / 60, 2))
    return out


def _feed(homes: int, days: int, book: TariffBook, sample
          ) -> tuple[list[tuple[HomeInsights, HomeForecasts | None]], float, int]:
    """Fresh states fed every home's windows; returns them, seconds spent feeding and windows."""
    states = []
    spent = 0.0
    windows = 0
    for h in range(homes):
        ws = home_windows(h, days, sample)
        insights, forecasts = HomeInsights(ws[0].home_id, TIMEZONE), None
        t0 = time.perf_counter()
        for w in ws:
            _, forecasts = run_both(insights, forecasts, w, book)
        spent += time.perf_counter() - t0
        windows += len(ws)
        states.append((insights, forecasts))
        del ws
    return states, spent, windows


def run_state_bench(homes: int, days: int) -> StateBenchResult:
    book = book_from_toml(TARIFFS)
    sample = _sample_day()
    states, spent, windows = _feed(homes, days, book, sample)
    t0 = time.perf_counter()
    minutely = [pickle.dumps(insights) for insights, _ in states]
    dumping = time.perf_counter() - t0
    t0 = time.perf_counter()
    hourly = [pickle.dumps(forecasts) for _, forecasts in states]
    dumping_hourly = time.perf_counter() - t0
    snapshots = minutely + hourly
    del states
    gc.collect()
    # Memory: what the states hold once restored from their snapshots, as after a restart
    # (tracing the feeding itself would slow it tenfold). Caches a live state fills on the way
    # (zoneinfo offsets, derived weights) are not counted; the fleet shares most of them.
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    restored = [pickle.loads(b) for b in snapshots]
    gc.collect()  # what unpickling left for the collector is not held
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del restored
    return StateBenchResult(homes, days, round(sum(map(len, snapshots)) / homes), round(held / homes),
                            round(spent / windows * 1e6, 2), round(dumping / homes * 1e6, 1),
                            round(sum(map(len, minutely)) / homes), round(dumping_hourly / homes * 1e6, 1))


def print_state_result(result: StateBenchResult, console, as_json: bool) -> None:
    from rich.table import Table

    table = Table(title=f"insights state: {result.homes} homes x {result.days} days, 5 devices, a tariff")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("snapshot per home (both states)", f"{result.bytes_per_home_snapshot:,} B")
    table.add_row("  rewritten each epoch (insights state)", f"{result.bytes_per_home_epoch:,} B")
    table.add_row("memory per home (tracemalloc)", f"{result.bytes_per_home_memory:,} B")
    table.add_row("one window through both states", f"{result.us_per_window:.1f} µs")
    table.add_row("snapshot of the insights state per home", f"{result.us_per_snapshot:,.0f} µs")
    table.add_row("snapshot of the forecasts state (hourly)", f"{result.us_per_hourly_snapshot:,.0f} µs")
    console.print(table)
    if as_json:
        print(json.dumps(asdict(result)))
