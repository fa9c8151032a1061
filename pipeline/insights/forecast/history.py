"""A compact ring of slot values indexed by local slot number; NaN marks a missing slot."""

from __future__ import annotations

import math
from array import array

import numpy as np

NAN = math.nan


class SlotRing:
    """The last ``capacity`` slots as float32 (4 bytes a slot); older slots read as missing."""

    __slots__ = ("capacity", "values", "newest")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values = array("f", [NAN]) * capacity
        self.newest: int | None = None

    def __getstate__(self):
        return self.capacity, self.values, self.newest

    def __setstate__(self, state) -> None:
        self.capacity, self.values, self.newest = state

    def put(self, index: int, value: float) -> None:
        """Store a slot (NaN for missing). Slots skipped since the newest one become missing."""
        cap = self.capacity
        if self.newest is None:
            self.newest = index
        elif index > self.newest:
            if index - self.newest >= cap:
                self.values = array("f", [NAN]) * cap
            else:
                for i in range(self.newest + 1, index):
                    self.values[i % cap] = NAN
            self.newest = index
        elif index <= self.newest - cap:
            return
        self.values[index % cap] = value

    def get(self, index: int) -> float:
        if self.newest is None or index > self.newest or index <= self.newest - self.capacity:
            return NAN
        return self.values[index % self.capacity]

    def take(self, indices: np.ndarray, known_until: int | np.ndarray | None = None) -> np.ndarray:
        """Values at many slot numbers as float64; NaN where missing, out of the ring, or after
        ``known_until`` (what was not yet known at an issue time)."""
        if self.newest is None:
            return np.full(indices.shape, np.nan)
        view = np.frombuffer(self.values, dtype=np.float32)
        out = view[indices % self.capacity].astype(np.float64)
        limit = self.newest if known_until is None else np.minimum(known_until, self.newest)
        out[(indices > limit) | (indices <= self.newest - self.capacity)] = np.nan
        return out

    def minimum(self) -> float:
        """The smallest value held (NaN when empty): a floor for interval bounds."""
        view = np.frombuffer(self.values, dtype=np.float32)
        return float(np.nanmin(view)) if np.isfinite(view).any() else NAN
