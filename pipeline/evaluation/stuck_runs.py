"""Stuck or held readings: long runs of one exact value, which a real meter does not produce.

REFIT's PROVENANCE lists such runs (House 20 holds 445 W for 13 days; both houses hold one
value for 2 days from 2014-08-30), and SGSC homes read 0.000 kWh for weeks. They are logging
faults or fills, not load, so the evaluation does not score forecasts against them.

A run is consecutive readings of one device with the same power, with no gap longer than
``max_gap`` between them. It is stuck when it lasts at least ``min_minutes`` AND spans at least
``min_samples`` readings: an hour of identical 30-s readings is implausible, while a
half-hourly kWh meter legitimately repeats a value for a few quiet hours (so it takes 24
readings, 12 hours, there).

This is the one stuck-run rule: the forecast evaluation applies it to whole homes (``stuck_runs``)
and the fault injector to one device's arrays (``held_runs`` with ``INJECTION_RULE``), so the two
differ only in the parameters they state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl


@dataclass(frozen=True, slots=True)
class StuckRule:
    min_minutes: float = 60.0
    min_samples: int = 24
    max_gap: timedelta | None = timedelta(minutes=15)  # None: a hole in the data does not end a run
    count_zeros: bool = True  # False: a held zero is a quiet device, not a stuck meter


# The fault injector keeps its faults clear of real stuck runs: an hour over 12 readings or more of
# one non-zero value, across holes (a meter that is off reads 0 for days, and that is no fault).
INJECTION_RULE = StuckRule(min_minutes=60.0, min_samples=12, max_gap=None, count_zeros=False)


@dataclass(frozen=True, slots=True)
class StuckRun:
    device_id: str
    start: datetime  # first reading of the run (UTC)
    end: datetime  # last reading of the run (UTC)
    samples: int
    power_w: float


def held_runs(ts_us: np.ndarray, power: np.ndarray, rule: StuckRule) -> list[tuple[int, int]]:
    """(first, last) index of each stuck run in one device's readings (epoch microseconds,
    increasing). A missing value (NaN) holds nothing: it starts a run of its own."""
    n = len(power)
    if n == 0:
        return []
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = power[1:] != power[:-1]
    if rule.max_gap is not None:
        new_run[1:] |= np.diff(ts_us) > rule.max_gap // timedelta(microseconds=1)
    firsts = np.flatnonzero(new_run)
    lasts = np.append(firsts[1:] - 1, n - 1)
    min_s = rule.min_minutes * 60
    return [(int(a), int(b)) for a, b in zip(firsts, lasts)
            if (rule.count_zeros or power[a] != 0) and b - a + 1 >= rule.min_samples
            and (int(ts_us[b]) - int(ts_us[a])) // 1_000_000 >= min_s]  # whole seconds, as before


def stuck_runs(readings: pl.DataFrame, rule: StuckRule) -> list[StuckRun]:
    """The stuck runs in one home's readings (columns device_id, ts, power_w)."""
    if readings.is_empty():
        return []
    d = readings.select("device_id", "ts", "power_w").sort("device_id", "ts")
    out = []
    for (device,), part in d.group_by("device_id", maintain_order=True):
        ts = part["ts"]
        power = part["power_w"].cast(pl.Float64).to_numpy()
        for a, b in held_runs(ts.dt.epoch("us").to_numpy(), power, rule):
            out.append(StuckRun(device, ts[a], ts[b], b - a + 1, float(power[a])))
    return sorted(out, key=lambda r: (r.start, r.device_id))


def excluded_slots(runs: list[StuckRun], resolution_min: int, hold: timedelta) -> set[int]:
    """UTC epoch minutes of the slots (of that length) that a stuck run touches; a run's last
    reading stands for ``hold`` after it."""
    out: set[int] = set()
    for run in runs:
        first = int(run.start.timestamp()) // 60
        last = int((run.end + hold).timestamp()) // 60 - 1
        out.update(range(first - first % resolution_min, last + 1, resolution_min))
    return out
