"""Precision and recall of the detectors on real data with injected, labelled faults.

``evaluate_anomalies(readings, seed)`` takes a readings frame (``pipeline.ingest.tabular.readings_frame``),
writes faults into each home's real series at random times after a warm-up (``inject.py`` says
what each fault looks like), runs the flow's own operators (``DeviceWindower`` ->
``HomeAggregator`` -> ``DeviceDetector``/``HomeDetector``, see ``series.detect``) and matches what
they report against what was injected.

Where faults go. Per home, after ``warmup_days`` (14): the meter's faults (extra load, stuck value,
dropout, counter reset) take turns in consecutive slots of a few days, one fault per slot at a
random time in it, never within 6 h of a data hole or of a real stuck run; each appliance gets a
stretched on-period every week, once it has had twice LONG_RUNNING's warm-up in on-periods; the semi-synthetic fridge (added when the home has appliance
channels at 1-minute resolution or finer, because none of these datasets has a fridge) gets a duty
drift every 6 days. A meter without an energy counter gets one derived from its power
(REFIT/UK-DALE), so counter resets can be written; the other slots get a one-sample counter
glitch each, which must not alert. Fault sizes are relative to the series' own history (so they are
"far" from its normal): an extra load for 2-6 h of max(1.5 kW, twice the home's usual high at
those hours: the 95th percentile of its hourly consumption at the same local hours of day, and the
hour either side, over the 28 days before), so those hours use more than twice their usual high (a heater left on; HIGH_CONSUMPTION waits for an hour of excess, so shorter ones are not
faults it claims to find); a stuck value for 1-2 x max(3 h, 1.5 x (an hour and 12 readings), 5 x the longest the meter held a value); a dropout for
1-4 x max(2 h, 8 x the reading interval); a long run for 5 x the appliance's 95th percentile
on-period, 1-12 h; a duty drift to 55-75 % (two in three) or 5-15 %, for 12-72 h.

Matching rule (event level). A detection is the interval [started_at, ended_at] (the end of data
when still open); a fault is the interval it was written over (a counter reset: from the reset to
the reading that confirms it). A detection is a true positive when it overlaps a fault of its
kind on its series (a home's total for extra load; the device otherwise); a fault is found when a
detection of its kind overlaps it. Recall = found / injected. Precision = true positives / (true
positives + false positives), where a detection that overlaps no injected fault of its kind is
*excluded* (counted in neither) when it overlaps, on the same series, a real fault (a data hole,
a real stuck run) or an injected fault of another kind (a stuck value at a high reading is also
high consumption; a home's total and its meter count as one series), and is a false positive
otherwise.

Real faults are counted separately, not in recall: data holes (flagged rows dropped by the
importer, missing intervals) are real silences; real stuck runs (the same non-zero value for
an hour and 12 readings or more: REFIT House 20's 445 W for 13 days, both houses' 2014-08-30 run,
and others) are real FLAT_LINE faults; and real high-consumption episodes (two clock hours or
more, before injection, each over max(2 x, + 1 kW) the home's usual high for that time of day as
defined above: ``real_high_episodes``, an offline rule, blind to the detector's state) are real
HIGH_CONSUMPTION faults. ``real_found`` says how many of them the detector found. Injected faults
keep clear of all of them.

``python -m pipeline.evaluation.anomaly --data DIR`` prints the table for each dataset in DIR
(refit/, ukdale/, sgsc/ as the shared data folder holds them).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.evaluation.anomaly_series import DeviceSeries, detect, series_from_frame
from pipeline.evaluation.fridge import Drift, simulate_fridge
from pipeline.evaluation.inject import (
    US,
    Fault,
    add_load,
    derive_counter,
    drop,
    follow_power_change,
    glitch_counter,
    hold_value,
    longest_hold_s,
    median_interval_s,
    on_periods,
    real_holes,
    reset_counter,
    resolution,
    span,
    stretch_run,
    stuck_runs,
)
from pipeline.evaluation.pool import spawn_pool
from pipeline.insights.anomaly.settings import DAY, HOUR, AnomalySettings
from pipeline.records import Anomaly, AnomalyKind, DeviceKind
from pipeline.settings import WindowSettings

METER_KINDS = (AnomalyKind.HIGH_CONSUMPTION, AnomalyKind.FLAT_LINE, AnomalyKind.SILENT,
               AnomalyKind.COUNTER_BACKWARDS)
CLEARANCE_S = 6 * HOUR  # faults keep this far from data holes, stuck runs and slot edges


@dataclass(frozen=True)
class AnomalyEvalRow:
    kind: str
    precision: float
    recall: float
    injected: int  # faults written
    detected: int  # detections of this kind, all of them
    found: int = 0  # injected faults overlapped by a detection of their kind
    true_positives: int = 0
    false_positives: int = 0
    excluded: int = 0  # explained by a real fault or by another kind's injected fault
    real_faults: int = 0  # real faults of this kind in the data (stuck runs for FLAT_LINE)
    real_found: int = 0


@dataclass
class Evaluation:
    rows: list[AnomalyEvalRow]
    injected: list[Fault]
    real: list[Fault]
    detections: list[Anomaly]
    seconds: float
    homes: int
    readings: int
    glitches: int = 0
    notes: list[str] = field(default_factory=list)


def evaluate_anomalies(readings: pl.DataFrame, seed: int = 0, tz: str = "UTC",
                       settings: AnomalySettings = AnomalySettings()) -> list[AnomalyEvalRow]:
    """Precision and recall per anomaly kind on ``readings`` with injected faults (see the module)."""
    return run_evaluation(readings, seed=seed, tz=tz, settings=settings).rows


def run_evaluation(readings: pl.DataFrame, seed: int = 0, tz: str = "UTC",
                   settings: AnomalySettings = AnomalySettings(),
                   window_settings: WindowSettings = WindowSettings(),
                   warmup_days: float = 14.0, fridge: bool = True, workers: int = 1,
                   progress: Callable[[str], None] | None = None) -> Evaluation:
    """The evaluation with everything it saw; ``workers`` > 1 evaluates homes in parallel
    processes (the result is the same: each home's faults come from the seed and the home)."""
    if readings.is_empty():
        raise ValueError("no readings to evaluate")
    missing = {"home_id", "device_id", "kind", "ts", "power_w", "energy_wh"} - set(readings.columns)
    if missing:
        raise ValueError(f"the readings frame lacks {', '.join(sorted(missing))} (use pipeline.ingest.tabular.readings_frame)")
    started = time.perf_counter()
    by_home: dict[str, list[DeviceSeries]] = {}
    for s in series_from_frame(readings):
        by_home.setdefault(s.home_id, []).append(s)
    jobs = [(home, series, seed, tz, settings, window_settings, warmup_days, fridge)
            for home, series in sorted(by_home.items())]
    if workers > 1 and len(jobs) > 1:
        with spawn_pool(workers) as pool:
            results = []
            for n, result in enumerate(pool.map(_evaluate_home, *zip(*jobs))):
                results.append(result)
                if progress:
                    progress(f"{n + 1}/{len(jobs)} homes")
    else:
        results = []
        for n, job in enumerate(jobs):
            if progress:
                progress(f"{job[0]} ({n + 1}/{len(jobs)})")
            results.append(_evaluate_home(*job))
    injected = [f for r in results for f in r.injected]
    real = [f for r in results for f in r.real]
    detections = [a for r in results for a in r.detections]
    rows = score(injected, real, detections, {r.home_id: r.end for r in results})
    return Evaluation(rows, injected, real, detections, time.perf_counter() - started,
                      len(by_home), readings.height, sum(r.glitches for r in results))


@dataclass
class _HomeResult:
    home_id: str
    injected: list[Fault]
    real: list[Fault]
    detections: list[Anomaly]
    glitches: int
    end: float


def _evaluate_home(home: str, series: list[DeviceSeries], seed: int, tz: str,
                   settings: AnomalySettings, window_settings: WindowSettings, warmup_days: float,
                   fridge: bool) -> _HomeResult:
    # One generator per home, from the seed and the home: a home's faults do not depend on which
    # other homes are in the frame, nor on the order they are evaluated in.
    rng = np.random.default_rng([seed, zlib.crc32(home.encode())])
    plan = _HomeInjector(home, series, rng, settings, window_settings, warmup_days, fridge, tz)
    changed = plan.run()
    end = max(s.ts[-1] for s in changed) / US + settings.window_s
    return _HomeResult(home, plan.faults, plan.real, detect(changed, tz, settings, window_settings),
                       plan.glitches, end)


# ---------------------------------------------------------------- injection, per home


class _HomeInjector:
    def __init__(self, home: str, series: list[DeviceSeries], rng: np.random.Generator,
                 settings: AnomalySettings, window_settings: WindowSettings, warmup_days: float,
                 fridge: bool, tz: str = "UTC") -> None:
        self.home, self.series, self.rng = home, series, rng
        self.tz = tz
        self.settings, self.window_settings = settings, window_settings
        self.warmup_s = warmup_days * DAY
        self.with_fridge = fridge
        self.faults: list[Fault] = []
        self.real: list[Fault] = []
        self.glitches = 0
        self.meter = next((s for s in series if s.kind == DeviceKind.METER), None)
        self.appliances = [s for s in series if s.kind == DeviceKind.APPLIANCE]
        self.busy: list[tuple[float, float]] = []  # real faults, kept clear of

    def run(self) -> list[DeviceSeries]:
        for s in self.series:
            for a, b in real_holes(s):
                self.real.append(Fault(self.home, s.device_id, None, a, b, "data hole"))
                self.busy.append((a, b))
            for a, b, value in stuck_runs(s):
                self.real.append(Fault(self.home, s.device_id, AnomalyKind.FLAT_LINE, a, b,
                                       f"real stuck run at {value:g} W"))
                self.busy.append((a, b))
        if self.meter is not None:
            for a, b, ratio in real_high_episodes(self.meter, self.tz):
                self.real.append(Fault(self.home, "", AnomalyKind.HIGH_CONSUMPTION, a, b,
                                       f"real: up to {ratio:.1f} x the usual high for {(b - a) / HOUR:.0f} h"))
                self.busy.append((a, b))
        out = [s for s in self.series if s is not self.meter]
        fridge = self._fridge()
        for appliance in self.appliances:
            self._long_runs(appliance)
        if fridge is not None:
            for a, b in real_holes(fridge):  # sampled when the home's meter was: the same holes
                self.real.append(Fault(self.home, fridge.device_id, None, a, b, "data hole"))
            out.append(fridge)
        if self.meter is not None:
            out.append(self._meter_faults(self.meter))
        return out

    def _clear(self, series: DeviceSeries, start: float, end: float, max_gap_s: float) -> bool:
        """Data all along [start, end] with the clearance, and no real fault near it."""
        lo, hi = start - CLEARANCE_S, end + CLEARANCE_S
        if any(a < hi and b > lo for a, b in self.busy):
            return False
        s = span(series, lo, hi)
        ts = series.ts[s]
        if len(ts) < 2 or ts[0] - lo * US > max_gap_s * US or hi * US - ts[-1] > max_gap_s * US:
            return False
        return bool(np.max(np.diff(ts)) <= max_gap_s * US)

    def _slots(self, first: float, last: float, length: float):
        t = first
        while t + length <= last:
            yield t
            t += length

    def _pick(self, series: DeviceSeries, slot: float, length: float, duration: float,
              max_gap_s: float, ok: Callable[[float], bool] = lambda t: True) -> float | None:
        lo, hi = slot + CLEARANCE_S, slot + length - duration - CLEARANCE_S
        if hi <= lo:
            return None
        for _ in range(30):
            t = float(self.rng.uniform(lo, hi))
            if self._clear(series, t, t + duration, max_gap_s) and ok(t):
                return t
        return None

    # -------------------------------------------------------------- the meter

    def _meter_faults(self, meter: DeviceSeries) -> DeviceSeries:
        s, rng = self.settings, self.rng
        interval = median_interval_s(meter)
        max_gap = max(15 * 60.0, 2.5 * interval)
        start, end = meter.ts[0] / US + self.warmup_s, meter.ts[-1] / US
        usual_high = _usual_high(meter, self.tz)
        quantum = resolution(meter)
        stuck_below = max(HOUR, 12 * interval)
        # Never shorter than 1.5 x the real-stuck-run rule (an hour and 12 readings): a half-hourly
        # meter repeats one value for 6 readings on a quiet night, and that is not a stuck sensor.
        flat_base = max(3 * HOUR, 1.5 * stuck_below,
                        5 * longest_hold_s(meter, s.flat_quanta * quantum, stuck_below))
        silent_base = max(2 * HOUR, 8 * interval)
        typical = float(np.median(np.abs(meter.power)))
        # At least 2.5 days, so an extra load comes every 10 days at most: denser, the faults the
        # detector misses would fill the home's busiest-hours quantile and hide the next ones.
        slot_len = max(2.5 * DAY, 2 * (2 * flat_base) + 2 * CLEARANCE_S, 4 * silent_base + 2 * CLEARANCE_S)
        slot_len = math.ceil(slot_len / DAY) * DAY

        old_power = meter.power.copy()
        kinds: list[AnomalyKind] = []
        resets: list[tuple[float, float]] = []
        drops: list[tuple[float, float]] = []
        glitch_after: list[tuple[float, float]] = []  # (earliest, latest) for a trap glitch
        for slot in self._slots(start, end, slot_len):
            if not kinds:
                kinds = [METER_KINDS[i] for i in rng.permutation(len(METER_KINDS))]
            kind = kinds.pop()
            if kind == AnomalyKind.HIGH_CONSUMPTION:
                d = float(rng.uniform(2, 6)) * HOUR
                t = self._pick(meter, slot, slot_len, d, max_gap)
                if t is None:
                    continue
                extra_w = max(1500.0, 2.5 * usual_high(t, t + d))
                add_load(meter, t, t + d, extra_w)
                self.faults.append(Fault(self.home, "", kind, t, t + d, f"+{extra_w:.0f} W for {d / 3600:.1f} h"))
            elif kind == AnomalyKind.FLAT_LINE:
                d = float(rng.uniform(1, 2)) * flat_base
                floor = max(typical, s.flat_quanta * quantum, 1.0)

                def ok(t: float) -> bool:
                    i = span(meter, t, t).start
                    return i < len(meter.power) and abs(meter.power[i]) >= floor  # noqa: B023 (called in this iteration only)

                t = self._pick(meter, slot, slot_len, d, max_gap, ok)
                if t is None:
                    continue
                value = hold_value(meter, t, t + d)
                self.faults.append(Fault(self.home, meter.device_id, kind, t, t + d,
                                         f"stuck at {value:.1f} W for {d / 3600:.1f} h"))
            elif kind == AnomalyKind.SILENT:
                d = float(rng.uniform(1, 4)) * silent_base
                t = self._pick(meter, slot, slot_len, d, max_gap)
                if t is None:
                    continue
                drops.append((t, t + d))
                self.faults.append(Fault(self.home, meter.device_id, kind, t, t + d,
                                         f"silent for {d / 3600:.1f} h"))
            else:
                t = self._pick(meter, slot, slot_len, 3 * interval, max_gap)
                if t is None:
                    continue
                resets.append((t, slot))
                continue
            glitch_after.append((self.faults[-1].end + 2 * HOUR, slot + slot_len - 2 * HOUR))

        if meter.energy is None:
            derive_counter(meter, self.window_settings.max_gap_s)
        else:
            # The counter's own interval, not the windower's 15-minute cap on held power: a
            # half-hourly meter's reading stands for its whole half hour, and capping it gave
            # the injected load only half its energy.
            follow_power_change(meter, old_power, max_gap)
        for t, _ in resets:
            confirmed = reset_counter(meter, t)
            self.faults.append(Fault(self.home, meter.device_id, AnomalyKind.COUNTER_BACKWARDS, t,
                                     confirmed + s.window_s, "counter reset to about zero"))
        for lo, hi in glitch_after:
            if hi > lo:
                t = float(rng.uniform(lo, hi))
                i = span(meter, t, t).start
                if 0 < i < len(meter.ts) - 1:
                    glitch_counter(meter, t)
                    self.glitches += 1
        for a, b in drops:
            meter = drop(meter, a, b)
        return meter

    # -------------------------------------------------------------- appliances

    def _long_runs(self, appliance: DeviceSeries) -> None:
        s, rng = self.settings, self.rng
        periods = on_periods(appliance, s.on_min_w, s.run_bridge_s)
        if len(periods) < 20:
            return  # too few on-periods to know what long is
        lengths = np.array([(appliance.ts[b] - appliance.ts[a]) / US + 60 for a, b in periods])
        # Stretch typical uses only: a period whose peak reaches half the appliance's working power.
        working = float(np.quantile(appliance.power[appliance.power > s.on_min_w], 0.9))
        typical = np.array([appliance.power[a:b + 1].max() >= working / 2 for a, b in periods])
        d = float(np.clip(5 * np.quantile(lengths, 0.95), HOUR, 12 * HOUR))
        starts = np.array([appliance.ts[a] / US for a, _ in periods])
        # Not before the detector knows the appliance: twice its warm-up in on-periods.
        known = starts[min(len(starts) - 1, 2 * s.long_warmup_runs)]
        first, last = max(appliance.ts[0] / US + self.warmup_s, known), appliance.ts[-1] / US
        slot_len = max(7 * DAY, 2 * d + 2 * CLEARANCE_S)
        for slot in self._slots(first, last, slot_len):
            lo, hi = slot + CLEARANCE_S, slot + slot_len - d - CLEARANCE_S
            choices = np.flatnonzero((starts >= lo) & (starts <= hi) & typical)
            for k in rng.permutation(choices)[:10]:
                a, b = periods[k]
                t = starts[k]
                if self._clear(appliance, t, t + d, s.run_bridge_s):
                    stretch_run(appliance, a, b, t + d, s.on_min_w, rng)
                    self.faults.append(Fault(self.home, appliance.device_id, AnomalyKind.LONG_RUNNING,
                                             t, t + d, f"on for {d / 3600:.1f} h"))
                    break

    # -------------------------------------------------------------- the fridge

    def _fridge(self) -> DeviceSeries | None:
        base = self.meter or (self.appliances[0] if self.appliances else None)
        if not self.with_fridge or base is None or not self.appliances or median_interval_s(base) > 60:
            return None
        rng = self.rng
        kitchen_names = [a for a in self.appliances if any(k in a.device_id for k in ("kettle", "microwave"))]
        door = np.zeros(len(base.ts), dtype=bool)
        for a in kitchen_names or self.appliances:
            in_use = a.power > 200.0  # cooking, not a lamp or a display
            switched_on = a.ts[1:][in_use[1:] & ~in_use[:-1]]
            door |= np.isin(base.ts, switched_on)
        ts = base.ts.copy()
        holder = DeviceSeries(self.home, "fridge", DeviceKind.APPLIANCE, ts, np.zeros(len(ts)))
        drifts: list[Drift] = []
        first = ts[0] / US + self.warmup_s + 3 * DAY  # the duty warm-up on top
        for slot in self._slots(first, ts[-1] / US, 6 * DAY):
            d = float(rng.uniform(12, 72)) * HOUR
            t = self._pick(holder, slot, 6 * DAY, d, 5 * 60.0)
            if t is None:
                continue
            duty = float(rng.uniform(0.55, 0.75)) if rng.random() < 2 / 3 else float(rng.uniform(0.05, 0.15))
            drifts.append(Drift(t, t + d, duty))
            self.faults.append(Fault(self.home, "fridge", AnomalyKind.DUTY_CYCLE_DRIFT, t, t + d,
                                     f"duty {duty:.0%} for {d / 3600:.0f} h"))
        holder.power = simulate_fridge(ts, door, drifts, rng)
        return holder


def _usual_high(meter: DeviceSeries, tz: str) -> Callable[[float, float], float]:
    """For [start, end): the highest, over the local hours of day it covers and the hour either
    side, of the 95th percentile of the meter's hourly mean power at that hour of day in the 28
    days before ``start``."""
    hourly = (
        pl.DataFrame({"ts": pl.Series(meter.ts).cast(pl.Datetime("us", "UTC")), "p": meter.power})
        .group_by_dynamic("ts", every="1h").agg(pl.col("p").mean())
        .with_columns(pl.col("ts").dt.convert_time_zone(tz).dt.hour().alias("hour"),
                      (pl.col("ts").dt.epoch("us") / US).alias("t"))
    )
    t_all, hours, power = hourly["t"].to_numpy(), hourly["hour"].to_numpy(), hourly["p"].to_numpy()

    def usual_high(start: float, end: float) -> float:
        past = (t_all >= start - 28 * DAY) & (t_all < start)
        during = {int(h) for h in hours[(t_all >= start - HOUR) & (t_all < end)]}
        covered = {(h + step) % 24 for h in during for step in (-1, 0, 1)}
        highs = [np.quantile(power[past & (hours == h)], 0.95) for h in covered
                 if np.any(past & (hours == h))]
        return float(max(highs)) if highs else 0.0

    return usual_high


def real_high_episodes(meter: DeviceSeries, tz: str, min_hours: int = 2) -> list[tuple[float, float, float]]:
    """(start, end, peak ratio) of each real stretch of at least ``min_hours`` clock hours whose
    mean power is "far" above the home's usual high: over max(2 x, usual + 1 kW) the 95th
    percentile of the same local hour of day, and the hour either side, over the 28 days before
    (the size of an injected extra load, and HIGH_CONSUMPTION's own limit). Computed offline from
    the data before injection, independently of the detector's state."""
    frame = (
        pl.DataFrame({"ts": pl.Series(meter.ts).cast(pl.Datetime("us", "UTC")), "p": meter.power})
        .group_by_dynamic("ts", every="1h").agg(pl.col("p").mean())
        .with_columns(pl.col("ts").dt.convert_time_zone(tz).alias("local"))
        .with_columns(pl.col("local").dt.date().alias("day"), pl.col("local").dt.hour().alias("hour"))
    )
    if frame.is_empty():
        return []
    days = frame["day"].unique().sort()
    index = {d: i for i, d in enumerate(days.to_list())}
    grid = np.full((len(days), 24), np.nan)
    day_rows = np.array([index[d] for d in frame["day"].to_list()])
    grid[day_rows, frame["hour"].to_numpy()] = frame["p"].to_numpy()
    usual = np.full_like(grid, np.nan)
    for d in range(1, len(days)):
        past = grid[max(0, d - 28):d]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an hour of day with no data yet
            high = np.nanquantile(past, 0.95, axis=0)
        high[np.sum(np.isfinite(past), axis=0) < 7] = np.nan
        usual[d] = np.fmax(np.fmax(np.roll(high, 1), high), np.roll(high, -1))
    usual = usual[day_rows, frame["hour"].to_numpy()]
    limit = np.fmax(2 * usual, usual + 1000.0)
    power = frame["p"].to_numpy()
    over = np.isfinite(limit) & (power > limit)
    starts = (frame["ts"].dt.epoch("us") / US).to_numpy()
    out = []
    i = 0
    while i < len(over):
        if not over[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(over) and over[j + 1] and starts[j + 1] - starts[j] == HOUR:
            j += 1
        if j - i + 1 >= min_hours:
            ratio = float(np.max(power[i:j + 1] / np.maximum(usual[i:j + 1], 1.0)))
            out.append((float(starts[i]), float(starts[j] + HOUR), ratio))
        i = j + 1
    return out


# ---------------------------------------------------------------- matching


def score(injected: list[Fault], real: list[Fault], detections: list[Anomaly],
          data_end: dict[str, float]) -> list[AnomalyEvalRow]:
    """The rows of the table, by the matching rule in the module docstring."""
    meters = {(f.home_id, f.device_id) for f in injected if f.kind in METER_KINDS and f.device_id}

    def series_of(home: str, device: str) -> tuple[str, str]:
        # A meter home's total is its meter: one series for the exclusion rule.
        return (home, "") if (home, device) in meters else (home, device)

    def interval(a: Anomaly) -> tuple[float, float]:
        start = a.started_at.timestamp()
        end = a.ended_at.timestamp() if a.ended_at is not None else data_end.get(a.home_id, start)
        return start, max(end, start + 60)

    def overlaps(a: tuple[float, float], f: Fault) -> bool:
        return a[0] <= f.end and a[1] >= f.start

    rows = []
    explainers: dict[tuple[str, str], list[tuple[Fault, bool]]] = {}
    for f in injected:
        explainers.setdefault(series_of(f.home_id, f.device_id), []).append((f, False))
    for f in real:
        explainers.setdefault(series_of(f.home_id, f.device_id), []).append((f, True))
    kinds = [k for k in AnomalyKind if any(f.kind == k for f in injected)]
    for kind in kinds:
        faults = [f for f in injected if f.kind == kind]
        found_ids: set[int] = set()
        tp = fp = excluded = 0
        mine = [a for a in detections if a.kind == kind]
        for a in mine:
            span_ = interval(a)
            hits = [i for i, f in enumerate(faults)
                    if f.home_id == a.home_id and f.device_id == a.device_id and overlaps(span_, f)]
            if hits:
                tp += 1
                found_ids.update(hits)
                continue
            explained = any((is_real or f.kind != kind) and overlaps(span_, f)
                            for f, is_real in explainers.get(series_of(a.home_id, a.device_id), ()))
            if explained:
                excluded += 1
            else:
                fp += 1
        real_mine = [f for f in real if f.kind == kind]
        real_found = sum(1 for f in real_mine if any(
            a.home_id == f.home_id and a.device_id == f.device_id and overlaps(interval(a), f) for a in mine))
        rows.append(AnomalyEvalRow(
            kind=kind.value,
            precision=tp / (tp + fp) if tp + fp else 0.0,
            recall=len(found_ids) / len(faults),
            injected=len(faults), detected=len(mine), found=len(found_ids),
            true_positives=tp, false_positives=fp, excluded=excluded,
            real_faults=len(real_mine), real_found=real_found))
    return rows


# ---------------------------------------------------------------- the datasets of a shared data folder


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    tz: str
    spec_args: dict
    homes: tuple[str, ...] | None = None  # evaluate each of these separately; None: all together


def shared_datasets(root: Path) -> list[Dataset]:
    from pipeline.ingest.tabular import parse_device_cols

    wide = dict(layout="wide", ts_col="timestamp", home_col="house",
                device_cols=parse_device_cols("aggregate_w=mains:meter,kettle_w=kettle,dishwasher_w=dishwasher,"
                                              "washing_machine_w=washing_machine,microwave_w=microwave"),
                skip_flag_col="aggregate_missing")
    return [
        Dataset("REFIT", str(root / "refit/refit_houses2_20_30s.parquet"), "Europe/London",
                {**wide, "tz": "Europe/London"}, ("REFIT_House2", "REFIT_House20")),
        Dataset("UK-DALE", str(root / "ukdale/ukdale_house2_30s.parquet"), "Europe/London",
                {**wide, "tz": "UTC"}),
        Dataset("SGSC", str(root / "sgsc/sgsc_55homes_30min.parquet"), "Australia/Brisbane",
                dict(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz="Australia/Brisbane")),
    ]


def anomaly_table(result: Evaluation, title: str):
    """The evaluation's rows as a rich table (this module's ``main`` and ``shems evaluate``)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("kind", "precision", "recall", "injected", "found", "detected", "TP", "FP",
                "excluded", "real", "real found"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for r in result.rows:
        table.add_row(r.kind, f"{r.precision:.2f}", f"{r.recall:.2f}", str(r.injected), str(r.found),
                      str(r.detected), str(r.true_positives), str(r.false_positives), str(r.excluded),
                      str(r.real_faults), str(r.real_found))
    return table


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from pipeline.ingest.tabular import TableSpec, readings_frame

    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.anomaly", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with refit/, ukdale/, sgsc/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="evaluate only datasets whose name contains this")
    parser.add_argument("--workers", type=int, default=1, help="homes evaluated in parallel processes")
    args = parser.parse_args(argv)
    console = Console(width=max(110, Console().width))
    root = Path(args.data)
    for ds in shared_datasets(root):
        if args.only and args.only.lower() not in ds.name.lower():
            continue
        if not Path(ds.path).exists():
            console.print(f"[yellow]{ds.path} not found, skipped")
            continue
        frame = readings_frame(ds.path, TableSpec(**ds.spec_args))
        parts = [(f"{ds.name} {h}", frame.filter(pl.col("home_id") == h)) for h in ds.homes] if ds.homes else [(ds.name, frame)]
        for title, part in parts:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(title, total=None)
                result = run_evaluation(part, seed=args.seed, tz=ds.tz, workers=args.workers,
                                        progress=lambda text: bar.update(task, description=f"{title}: {text}"))  # noqa: B023 (runs inside this iteration)
            table = anomaly_table(result, f"{title}: {result.homes} home(s), {result.readings:,} readings, "
                                          f"{result.seconds:.0f} s, seed {args.seed}")
            console.print(table)
            console.print(f"counter glitches written as traps: {result.glitches}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
