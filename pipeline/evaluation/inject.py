"""Labelled faults written into real series at known times, and the real faults already there.

Each function edits one ``DeviceSeries`` in place (or returns a shortened copy) and the caller
records an ``InjectedFault`` with the interval the fault covers. The faults, as a homeowner's
devices would show them:

* extra load (HIGH_CONSUMPTION): a constant load added to the meter's power for a while, like an
  immersion heater or a heater left on;
* stuck value (FLAT_LINE): the meter keeps reporting, on time, the one value it read at the start;
* dropout (SILENT): the meter's readings are removed;
* counter reset (COUNTER_BACKWARDS): from one reading on, the energy counter restarts near zero;
  a one-sample glitch (the counter reads 0 once) is written elsewhere as a trap, not a fault;
* long run (LONG_RUNNING): a real on-period of an appliance is stretched by repeating its own
  on-samples (with 2 % noise, so it is not also a stuck value);
* duty drift (DUTY_CYCLE_DRIFT): the semi-synthetic fridge (``fridge.py``) runs at another duty.

Real faults (``real_faults``): data holes (a gap between readings of more than twice the usual
interval plus a minute: REFIT/UK-DALE's flagged rows, SGSC's missing intervals) and stuck runs
(the same non-zero value for at least an hour and 12 readings).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.evaluation.anomaly_series import DeviceSeries
from pipeline.evaluation.stuck_runs import INJECTION_RULE, StuckRule, held_runs
from pipeline.records import AnomalyKind

US = 1_000_000


@dataclass(frozen=True)
class Fault:
    home_id: str
    device_id: str  # the series it is judged on: "" for a home's total
    kind: AnomalyKind | None  # None for a real data hole
    start: float  # epoch s
    end: float
    detail: str


def span(series: DeviceSeries, start: float, end: float) -> slice:
    """Indices of the readings in [start, end)."""
    lo, hi = np.searchsorted(series.ts, [int(start * US), int(end * US)])
    return slice(int(lo), int(hi))


def median_interval_s(series: DeviceSeries) -> float:
    return float(np.median(np.diff(series.ts))) / US if len(series.ts) > 1 else 60.0


def add_load(series: DeviceSeries, start: float, end: float, watts: float) -> None:
    series.power[span(series, start, end)] += watts


def hold_value(series: DeviceSeries, start: float, end: float) -> float:
    s = span(series, start, end)
    value = float(series.power[s.start])
    series.power[s] = value
    return value


def drop(series: DeviceSeries, start: float, end: float) -> DeviceSeries:
    s = span(series, start, end)
    keep = np.ones(len(series.ts), dtype=bool)
    keep[s] = False
    return replace(series, ts=series.ts[keep], power=series.power[keep],
                   energy=None if series.energy is None else series.energy[keep])


def derive_counter(series: DeviceSeries, max_gap_s: float, start_wh: float = 1e6) -> None:
    """A meter's energy counter from its power, as the windower integrates it (held power, nothing
    across a gap longer than ``max_gap_s``)."""
    dt = np.diff(series.ts) / US
    steps = np.where(dt <= max_gap_s, series.power[:-1] * dt / 3600.0, 0.0)
    series.energy = start_wh + np.concatenate([[0.0], np.cumsum(steps)])


def follow_power_change(series: DeviceSeries, old_power: np.ndarray, max_gap_s: float) -> None:
    """Keep an original counter consistent with edited power: each reading's extra energy over the
    interval it starts (the interval importer's convention) is added from that reading on."""
    if series.energy is None:
        return
    dt = np.diff(series.ts, append=series.ts[-1] + int(median_interval_s(series) * US)) / US
    extra = (series.power - old_power) * np.minimum(dt, max_gap_s) / 3600.0
    series.energy = series.energy + np.cumsum(extra)


def reset_counter(series: DeviceSeries, at: float) -> float:
    """From the first reading at or after ``at`` the counter restarts from about zero; returns the
    time of the reading that confirms the reset (the second below the old value)."""
    i = span(series, at, at).start
    energy = _counter(series)
    energy[i:] -= energy[i - 1]
    return series.ts[min(i + 1, len(series.ts) - 1)] / US


def glitch_counter(series: DeviceSeries, at: float) -> None:
    i = span(series, at, at).start
    _counter(series)[i] = 0.0


def _counter(series: DeviceSeries) -> np.ndarray:
    if series.energy is None:
        raise ValueError(f"{series.home_id}/{series.device_id} has no energy counter to fault")
    return series.energy


def on_periods(series: DeviceSeries, on_w: float, bridge_s: float) -> list[tuple[int, int]]:
    """(first, last) reading indices of each on-period, off stretches up to ``bridge_s`` bridged."""
    on = np.flatnonzero(series.power > on_w)
    if len(on) == 0:
        return []
    breaks = np.flatnonzero(np.diff(series.ts[on]) > bridge_s * US)
    firsts = np.concatenate([[0], breaks + 1])
    lasts = np.concatenate([breaks, [len(on) - 1]])
    return [(int(on[a]), int(on[b])) for a, b in zip(firsts, lasts)]


def stretch_run(series: DeviceSeries, first: int, last: int, until: float, on_w: float,
                rng: np.random.Generator) -> None:
    """Keep the appliance on from reading ``first`` until ``until``, repeating its own on-samples."""
    samples = series.power[first:last + 1]
    samples = samples[samples > on_w]
    s = span(series, series.ts[first] / US, until)
    n = s.stop - s.start
    tiled = np.resize(samples, n) * (1 + rng.normal(0, 0.02, n))
    series.power[s] = np.maximum(tiled, on_w + 1.0)


def real_holes(series: DeviceSeries) -> list[tuple[float, float]]:
    gap_us = 2 * median_interval_s(series) * US + 60 * US
    i = np.flatnonzero(np.diff(series.ts) > gap_us)
    return [(series.ts[k] / US, series.ts[k + 1] / US) for k in i]


def stuck_runs(series: DeviceSeries, rule: StuckRule = INJECTION_RULE) -> list[tuple[float, float, float]]:
    """(start, end, value) in epoch seconds of each real stuck run of the device (the one rule of
    ``pipeline.evaluation.stuck_runs``); its last reading stands for one interval after it."""
    runs = held_runs(series.ts, series.power, rule)
    if not runs:
        return []
    interval = median_interval_s(series)
    return [(series.ts[a] / US, series.ts[b] / US + interval, float(series.power[a])) for a, b in runs]


def longest_hold_s(series: DeviceSeries, min_value: float, below_s: float) -> float:
    """The longest any value of at least ``min_value`` was held, ignoring holds of ``below_s`` or more
    (those are stuck runs, real faults)."""
    p = series.power
    change = np.flatnonzero(np.diff(p) != 0)
    firsts = np.concatenate([[0], change + 1])
    lasts = np.concatenate([change, [len(p) - 1]])
    holds = (series.ts[lasts] - series.ts[firsts]) / US + median_interval_s(series)
    ok = (np.abs(p[firsts]) >= min_value) & (holds < below_s)
    return float(holds[ok].max()) if ok.any() else 0.0


def resolution(series: DeviceSeries) -> float:
    d = np.abs(np.diff(series.power))
    d = d[d > 0]
    return float(d.min()) if len(d) else 1.0
