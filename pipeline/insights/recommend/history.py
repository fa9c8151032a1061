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
    """Values per UTC hour for the last ``hours`` hours, in ``array`` columns sharing one tag
    column that says which hour each slot holds (a slot is cleared when a newer hour takes it)."""

    __slots__ = ("tags", "columns")

    def __init__(self, hours: int, **typecodes: str) -> None:
        self.tags = array("i", [-1]) * hours
        self.columns: dict[str, array[Any]] = {name: array(code, bytes(array(code).itemsize * hours))
                        for name, code in typecodes.items()}

    def _slot(self, hour: int) -> int | None:
        k = hour % len(self.tags)
        tag = self.tags[k]
        if tag == hour:
            return k
        if tag > hour:  # older than the ring reaches
            return None
        self.tags[k] = hour
        for column in self.columns.values():
            column[k] = 0
        return k

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
        k = wanted % len(self.tags)
        tags = np.frombuffer(self.tags, dtype=np.int32)[k]
        column = self.columns[name]
        values = np.frombuffer(column, dtype=_NUMPY_TYPES[column.typecode])[k].astype(float)
        return np.where(tags == wanted, values, np.nan)


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
        self.hourly = HourRings(hours, energy="f", minutes="B")  # Wh; minutes with a window
        self.open_run: _OpenRun | None = None
        self.runs: list[Run] = []
        self.newest_min = -1


class HomeHistory:
    __slots__ = ("hourly", "pending", "newest_min", "settled_min")

    def __init__(self, hours: int) -> None:
        # imported: Wh of the minutes with positive energy; exported: Wh (positive) of the minutes
        # with negative energy; low: the hour's low percentile of minute power (W).
        self.hourly = HourRings(hours, imported="f", exported="f", low="f", minutes="B")
        self.pending: dict[int, tuple[float, float]] = {}  # minute -> (energy Wh, power W)
        self.newest_min = -1
        self.settled_min = -1  # minutes before this are in the rings; later copies are dropped
