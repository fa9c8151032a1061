"""Per-device 1-minute tumbling windows on event time.

Definitions (the README and ``tests/reference.py`` follow these exactly):

* ``bucket`` is the window start, aligned to multiples of ``window_s`` since the epoch (UTC).
* ``mean_power_w`` is the arithmetic mean of the samples in the window (devices report at
  roughly even intervals, and a time-weighted mean would need the next window's first sample);
  ``min``/``max`` are of the samples; ``samples`` counts them. A repeated ``ts`` for the device
  (a QoS 1 redelivery) counts once: the first one wins.
* Energy: *the energy of the interval ending at a sample belongs to that sample's window.*
  Samples are taken in time order, the previous one carried over from earlier windows.
  - When both the previous counter sample and this one have a counter (``energy_wh``), the energy
    is the counter delta. A counter below the baseline is held, not trusted: if the next counter
    is back at or above the baseline, the held one was a glitch (a one-sample 0 or jump back) and
    is ignored; if the next is below the baseline too, the counter was reset, and the energy since
    the reset is the new reading itself. So a glitch never makes a spike, and a reset never
    loses or invents more than the few Wh between the reset and its first sample. A window's
    ``counter_resets`` counts the resets judged at its samples (the second sample below the old
    baseline), so anomaly detection sees resets and never glitches.
  - Otherwise power is integrated with a zero-order hold: ``previous.power_w * dt``, unless the
    gap exceeds ``max_gap_s`` (a dropout: no energy is invented across it).
  - A device's first sample ever contributes no energy.
* Lateness: the watermark of a device is the newest ``ts`` it has sent minus
  ``allowed_lateness_s``. A window closes when the watermark passes its end. A reading for a window
  that has already closed is *late*: it is returned to the caller (stored raw and counted), not
  aggregated. Any arrival order within the lateness bound gives exactly the in-order result.
* A device silent for ``idle_close_s`` of wall time has its open windows closed (``close_due``);
  its carried state stays, so the next reading's interval still counts.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pipeline.ingest.flood import DeviceBudget, fresh_budget
from pipeline.ingest.idle import ClosesWhenIdle
from pipeline.records import DeviceKind, DeviceWindow, Reading
from pipeline.settings import FloodSettings, WindowSettings

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)
class DeviceOutput:
    windows: list[DeviceWindow] = field(default_factory=list)
    late: list[Reading] = field(default_factory=list)


@dataclass(slots=True)
class EnergyState:
    """What energy accounting carries from one sample to the next, across windows."""

    prev_ts: float | None = None
    prev_power: float = 0.0
    baseline: float | None = None  # last trusted counter value
    held: float | None = None  # a counter below the baseline, waiting for the next one to judge
    resets: int = 0  # counter resets judged so far (each window reports its own share)

    def step(self, ts: float, power: float, counter: float | None, max_gap_s: float) -> float:
        """Energy (Wh) of the interval ending at this sample; advances the state."""
        energy = 0.0
        if counter is not None and self.baseline is not None:
            if counter >= self.baseline:
                energy = counter - self.baseline  # a held value, if any, was a glitch
                self.baseline, self.held = counter, None
            elif self.held is None:
                self.held = counter  # below the baseline: trust it only if the next agrees
            else:
                # Two in a row below the old baseline: a reset. Count from zero.
                energy = counter
                self.baseline, self.held = counter, None
                self.resets += 1
        elif counter is not None:
            self.baseline = counter
        elif self.prev_ts is not None:
            dt = ts - self.prev_ts
            if 0 < dt <= max_gap_s:
                energy = self.prev_power * dt / 3600.0
        self.prev_ts, self.prev_power = ts, power
        return energy


@dataclass(slots=True)
class _OpenWindow:
    start: float
    samples: list[tuple[float, float, float | None]] = field(default_factory=list)  # (ts, power, counter)
    seen: set[float] = field(default_factory=set)


class DeviceWindower(ClosesWhenIdle[DeviceOutput]):
    """Windows of one device. Picklable: Bytewax snapshots it for recovery."""

    __slots__ = ("settings", "open", "closed_until", "max_ts", "energy", "home_id", "device_id",
                 "kind", "last_wall", "budget")
    _output = DeviceOutput

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self.open: dict[float, _OpenWindow] = {}
        self.closed_until = -math.inf  # every window starting before this has been emitted
        self.max_ts = -math.inf
        self.energy = EnergyState()
        self.home_id = self.device_id = ""
        self.kind = DeviceKind.APPLIANCE
        self.last_wall: datetime | None = None
        self.budget: DeviceBudget | None = None  # pipeline/ingest/flood.py

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state) -> None:
        self.budget = None  # a snapshot from before the flood budget has none
        for name, value in state.items():
            setattr(self, name, value)

    def admit(self, reading: Reading, flood: FloodSettings) -> int:
        """0 when the reading is within the device's rate (pipeline/ingest/flood.py) and may be
        added, else how many readings its flood has refused with this one."""
        ts = reading.ts.timestamp()
        if self.budget is None:
            self.budget = fresh_budget(ts, flood)
        return self.budget.admit(ts, flood)

    def add(self, reading: Reading, now_wall: datetime) -> DeviceOutput:
        out = DeviceOutput()
        self.last_wall = now_wall
        self.home_id, self.device_id, self.kind = reading.home_id, reading.device_id, reading.kind
        ts = reading.ts.timestamp()
        size = self.settings.window_s
        start = ts - ts % size
        if start < self.closed_until:
            out.late.append(reading)
            return out
        window = self.open.get(start)
        if window is None:
            window = self.open[start] = _OpenWindow(start)
        if ts not in window.seen:
            window.seen.add(ts)
            sample = (ts, reading.power_w, reading.energy_wh)
            if window.samples and ts < window.samples[-1][0]:
                insort(window.samples, sample, key=lambda s: s[0])
            else:
                window.samples.append(sample)
        if ts > self.max_ts:
            self.max_ts = ts
            self._close_until(self.max_ts - self.settings.allowed_lateness_s, out)
        return out

    def _close_until(self, watermark: float, out: DeviceOutput) -> None:
        """Emit, in order, every open window whose end is at or before the watermark."""
        size = self.settings.window_s
        # Nearly always one window is open and not yet due (this runs for every in-order reading).
        if len(self.open) != 1 or next(iter(self.open)) + size <= watermark:
            due = sorted(s for s in self.open if s + size <= watermark)
            for start in due:
                out.windows.append(self._emit(self.open.pop(start)))
        limit = watermark - watermark % size  # due windows all end at or before this
        if limit > self.closed_until:
            self.closed_until = limit

    def _emit(self, window: _OpenWindow) -> DeviceWindow:
        energy = 0.0
        total = 0.0
        low, high = math.inf, -math.inf
        step = self.energy.step
        resets_before = self.energy.resets
        max_gap = self.settings.max_gap_s
        for ts, power, counter in window.samples:
            energy += step(ts, power, counter, max_gap)
            total += power
            low = power if power < low else low
            high = power if power > high else high
        n = len(window.samples)
        return DeviceWindow(
            home_id=self.home_id,
            device_id=self.device_id,
            kind=self.kind,
            bucket=_EPOCH + timedelta(seconds=window.start),
            mean_power_w=total / n,
            min_power_w=low,
            max_power_w=high,
            energy_wh=energy,
            samples=n,
            counter_resets=self.energy.resets - resets_before,
        )

    def _holds_open(self) -> bool:
        return bool(self.open)

    def flush(self) -> DeviceOutput:
        out = DeviceOutput()
        if self.open:
            last = max(self.open)
            self._close_until(last + self.settings.window_s, out)
        return out

    def is_empty(self) -> bool:
        return not self.open
