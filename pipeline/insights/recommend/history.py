"""A home's compact history: hourly ring buffers per device and for the home, and the runs of
flexible appliances."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.records import DeviceKind

DAYS_PER_MONTH = 365.25 / 12
QUARTER_S = 900
_FLEXIBLE_PARTS = ("wash", "dish", "dryer", "drier", "tumble", "boiler", "immersion", "waterheater",
                   "water_heater", "water-heater", "hotwater", "hot_water", "charger", "wallbox")
_FLEXIBLE_WORDS = {"ev", "car", "dryer"}
_NO_USAGE_CHECK = {DeviceKind.METER, DeviceKind.PV, DeviceKind.BATTERY}


def is_flexible(device_id: str, kind: DeviceKind) -> bool:
    """A load that can run at another time: an EV, or an appliance named like a deferrable one."""
    if kind == DeviceKind.EV:
        return True
    if kind != DeviceKind.APPLIANCE:
        return False
    name = device_id.lower()
    return any(part in name for part in _FLEXIBLE_PARTS) or bool(
        _FLEXIBLE_WORDS & set(re.split(r"[^a-z0-9]+", name)))


# ---------------------------------------------------------------------- compact history

_NUMPY_TYPES = {"f": np.float32, "B": np.uint8}


class HourRings:
    """Values per UTC hour for the last ``hours`` hours, in ``array`` columns. Hours are written
    in order (newest last), so the ring needs only the newest hour to know which hour each slot
    holds; a slot holds its hour when its ``minutes`` (every ring has that column) is above 0.
    Slots of the hours skipped when a newer hour arrives are cleared.

    Snapshots written while a home's forecaster shared its state (before stop 19) hold one column
    XOR a prediction of it from the forecaster's hourly history (an hour's mean power in W is its
    energy in Wh), with that history and its local clock as a fourth item; restoring XORs the
    prediction back (lossless). Snapshots are written without one now."""

    __slots__ = ("hours", "newest", "columns")

    def __init__(self, hours: int, **typecodes: str) -> None:
        self.hours = hours
        self.newest = -1
        self.columns: dict[str, array[Any]] = {name: array(code, bytes(array(code).itemsize * hours))
                        for name, code in typecodes.items()}

    def __getstate__(self):
        return self.hours, self.newest, self.columns

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 4:
            self.hours, self.newest, self.columns, basis = state
            name = basis[0]
            bits = np.frombuffer(self.columns[name], dtype=np.uint32) ^ self._predicted_bits(basis)
            self.columns[name] = array("f", bits.tobytes())
            return
        if isinstance(state, tuple) and len(state) == 3:
            self.hours, self.newest, self.columns = state
            return
        # Before this layout (pickled slots): a tag column said which hour each slot held.
        tags, self.columns = state[1]["tags"], state[1]["columns"]
        self.hours = len(tags)
        self.newest = max(tags)
        for k, tag in enumerate(tags):
            if tag < 0 or tag <= self.newest - self.hours:
                for column in self.columns.values():
                    column[k] = 0

    def _predicted_bits(self, basis: tuple[str, Any, Any]) -> np.ndarray:
        """Per slot, the float32 bits of the basis's value for the local hour of its UTC hour."""
        out = np.zeros(self.hours, dtype=np.uint32)
        if self.newest < 0:
            return out
        _, ring, clock = basis
        held = np.arange(max(0, self.newest - self.hours + 1), self.newest + 1)
        # The zone's offset looked up once a day (a lookup per hour would cost milliseconds): on a
        # day the clocks change, a few hours are predicted from the wrong hour, which costs bytes,
        # not exactness (restoring computes the same prediction).
        daily = np.array([clock.offset_min(int(hour) * 60) for hour in held[::24]])
        local = (held * 60 + np.repeat(daily, 24)[:len(held)]) // 60
        out[held % self.hours] = ring.take(local).astype(np.float32).view(np.uint32)
        return out

    def _slot(self, hour: int) -> int | None:
        cap = self.hours
        if hour > self.newest:
            if hour - self.newest >= cap or self.newest < 0:
                for name, column in self.columns.items():
                    self.columns[name] = array(column.typecode, bytes(column.itemsize * cap))
            else:
                for h in range(self.newest + 1, hour + 1):
                    for column in self.columns.values():
                        column[h % cap] = 0
            self.newest = hour
        elif hour <= self.newest - cap:  # older than the ring reaches
            return None
        return hour % cap

    def add(self, hour: int, **values: float) -> None:
        k = self._slot(hour)
        if k is not None:
            for name, value in values.items():
                self.columns[name][k] += value

    def put(self, hour: int, **values: float) -> None:
        k = self._slot(hour)
        if k is not None:
            for name, value in values.items():
                self.columns[name][k] = value

    def window(self, name: str, first_hour: int, hours: int) -> np.ndarray:
        """``hours`` values of one column from ``first_hour``; NaN where the ring holds nothing."""
        wanted = np.arange(first_hour, first_hour + hours)
        k = wanted % self.hours
        minutes = np.frombuffer(self.columns["minutes"], dtype=np.uint8)[k]
        held = (minutes > 0) & (wanted <= self.newest) & (wanted > self.newest - self.hours)
        column = self.columns[name]
        values = np.frombuffer(column, dtype=_NUMPY_TYPES[column.typecode])[k].astype(float)
        return np.where(held, values, np.nan)


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a flexible appliance: energy per quarter-hour from the quarter it started in."""

    start_s: int  # epoch seconds of its first on-minute
    end_s: int  # end of its last on-minute
    quarter_wh: tuple[float, ...]

    @property
    def first_quarter_s(self) -> int:
        return self.start_s // QUARTER_S * QUARTER_S

    @property
    def energy_wh(self) -> float:
        return sum(self.quarter_wh)


@dataclass(slots=True)
class _OpenRun:
    start_min: int
    last_on_min: int
    quarters: list[float]
    pending: list[tuple[int, float]] = field(default_factory=list)  # off-minutes that may be inside


class DeviceHistory:
    __slots__ = ("kind", "flexible", "hourly", "open_run", "runs", "newest_min")

    def __init__(self, kind: DeviceKind, flexible: bool, hours: int) -> None:
        self.kind = kind
        self.flexible = flexible
        # Wh; minutes with a window. Every kind reads it except for meters, PV and batteries (no
        # usage check, never flexible): they keep none.
        self.hourly: HourRings | None = (None if kind in _NO_USAGE_CHECK and not flexible
                                         else HourRings(hours, energy="f", minutes="B"))
        self.open_run: _OpenRun | None = None
        self.runs: list[Run] = []
        self.newest_min = -1

    def __setstate__(self, state) -> None:
        for name, value in state[1].items():  # pickled slots: (None, {name: value})
            setattr(self, name, value)
        if self.kind in _NO_USAGE_CHECK and not self.flexible:
            self.hourly = None  # a snapshot from before meters kept none


class HomeHistory:
    __slots__ = ("hourly", "pending", "newest_min", "settled_min")

    def __init__(self, hours: int) -> None:
        # imported: Wh of the minutes with positive energy; exported: Wh (positive) of the minutes
        # with negative energy; low: the hour's low percentile of minute power (W).
        self.hourly = HourRings(hours, imported="f", exported="f", low="f", minutes="B")
        self.pending: dict[int, tuple[float, float]] = {}  # minute -> (energy Wh, power W)
        self.newest_min = -1
        self.settled_min = -1  # minutes before this are in the rings; later copies are dropped
