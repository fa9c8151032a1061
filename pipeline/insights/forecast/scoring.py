"""Prequential scores: each issued forecast at a scored horizon is compared with its actual when
the target slot completes, beside the two seasonal-naive baselines for the same slot.

A forecast counts only when its actual and both baselines exist (so the three MAEs are over the
same slots). Only the forecasts at the scored horizons are kept until they mature: three float32
per forecast, in a ring of the last 25 issues.
"""

from __future__ import annotations

import math
from array import array
from datetime import datetime

from pipeline.records import ForecastScore

_ISSUES = 25  # the open issues: targets reach at most 24 h ahead


class PendingForecasts:
    """What was issued at the scored horizons: (forecast, lower, upper) per issue and horizon."""

    __slots__ = ("horizons", "made", "values")

    def __init__(self, horizons: tuple[int, ...]) -> None:
        self.horizons = horizons
        self.made = array("q", [-1]) * _ISSUES
        self.values = array("f", [math.nan]) * (_ISSUES * len(horizons) * 3)

    def __getstate__(self):
        # A forecast is read once, when its target slot matures, and every target ending by the
        # newest issue matured before that issue was made: those are dropped (NaN) from the
        # snapshot, about three fifths of it.
        values = self.values
        newest = max(self.made)
        width = len(self.horizons) * 3
        dead = [(row * width + k * 3) for row, made in enumerate(self.made) if made >= 0
                for k, horizon in enumerate(self.horizons) if made + horizon <= newest]
        if dead:
            values = array("f", values)
            for at in dead:
                values[at] = values[at + 1] = values[at + 2] = math.nan
        return self.horizons, self.made, values

    def __setstate__(self, state) -> None:
        self.horizons, self.made, self.values = state

    def start(self, made_min: int) -> None:
        row = (made_min // 60) % _ISSUES
        self.made[row] = made_min
        base = row * len(self.horizons) * 3
        for i in range(len(self.horizons) * 3):
            self.values[base + i] = math.nan

    def put(self, made_min: int, horizon_index: int, yhat: float, lower: float, upper: float) -> None:
        row = (made_min // 60) % _ISSUES
        at = (row * len(self.horizons) + horizon_index) * 3
        self.values[at], self.values[at + 1], self.values[at + 2] = yhat, lower, upper

    def get(self, made_min: int, horizon_index: int) -> tuple[float, float, float] | None:
        row = (made_min // 60) % _ISSUES
        if self.made[row] != made_min:
            return None
        at = (row * len(self.horizons) + horizon_index) * 3
        yhat = self.values[at]
        return None if yhat != yhat else (yhat, self.values[at + 1], self.values[at + 2])


class ScoreBoard:
    """Running sums per scored horizon: n, |model error|, |naive day error|, |naive week error|,
    covered."""

    __slots__ = ("horizons", "sums", "models")

    def __init__(self, horizons: tuple[int, ...]) -> None:
        self.horizons = horizons
        self.sums = array("d", [0.0]) * (len(horizons) * 5)
        self.models = [""] * len(horizons)

    def __getstate__(self):
        return self.horizons, self.sums, self.models

    def __setstate__(self, state) -> None:
        self.horizons, self.sums, self.models = state

    def add(self, horizon_index: int, actual: float, yhat: float, lower: float, upper: float,
            naive_day: float, naive_week: float) -> None:
        if not (math.isfinite(naive_day) and math.isfinite(naive_week)):
            return
        at = horizon_index * 5
        s = self.sums
        s[at] += 1
        s[at + 1] += abs(actual - yhat)
        s[at + 2] += abs(actual - naive_day)
        s[at + 3] += abs(actual - naive_week)
        s[at + 4] += 1.0 if lower <= actual <= upper else 0.0

    def records(self, home_id: str, resolution: int, at: datetime) -> list[ForecastScore]:
        out = []
        for i, horizon in enumerate(self.horizons):
            n, model, day, week, covered = self.sums[i * 5:i * 5 + 5]
            if n:
                out.append(ForecastScore(home_id, resolution, horizon, self.models[i], int(n),
                                         model / n, day / n, week / n, covered / n, at))
        return out
