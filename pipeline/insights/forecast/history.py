"""A compact ring of slot values indexed by local slot number; NaN marks a missing slot."""

from __future__ import annotations

import math
from array import array

import numpy as np

NAN = math.nan


class SlotRing:
    """The last ``capacity`` slots as float32 (4 bytes a slot); older slots read as missing.

    A ring of longer slots may name a ``basis``: a ring of shorter slots of the same home
    (``factor`` of them to one of these) from which its values are predicted when pickled. The
    snapshot then holds each value XOR its prediction, the mean of its shorter slots as float32:
    an hour whose quarters are all there is usually that mean to the last bit, so most of its bits
    are zero and compress to nothing; restoring XORs the same prediction back (lossless)."""

    __slots__ = ("capacity", "values", "newest", "basis")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values = array("f", [NAN]) * capacity
        self.newest: int | None = None
        self.basis: tuple[SlotRing, int] | None = None

    def __getstate__(self):
        if self.basis is None:
            return self.capacity, self.values, self.newest
        bits = np.frombuffer(self.values, dtype=np.uint32) ^ self._predicted_bits()
        return self.capacity, array("f", bits.tobytes()), self.newest, self.basis

    def __setstate__(self, state) -> None:
        self.capacity, self.values, self.newest = state[:3]
        self.basis = state[3] if len(state) > 3 else None
        if self.basis is not None:
            bits = np.frombuffer(self.values, dtype=np.uint32) ^ self._predicted_bits()
            self.values = array("f", bits.tobytes())

    def _predicted_bits(self) -> np.ndarray:
        """Per position of the ring, the float32 bits of the mean of its slot's shorter slots in
        the basis (NaN when one is missing); zero where nothing is held."""
        out = np.zeros(self.capacity, dtype=np.uint32)
        if self.newest is None or self.basis is None:
            return out
        ring, factor = self.basis
        slots = np.arange(self.newest - self.capacity + 1, self.newest + 1)
        shorter = ring.take(factor * slots[:, None] + np.arange(factor)[None, :])
        out[slots % self.capacity] = shorter.mean(axis=1).astype(np.float32).view(np.uint32)
        return out

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
