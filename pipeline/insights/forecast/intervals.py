"""Prediction intervals: rolling split conformal on normalised residuals, per horizon band, with
adaptive conformal inference so the coverage holds when the home's behaviour drifts.

Each matured target gives, per horizon band, a score ``z = (actual - forecast) / spread``,
where ``spread`` is the profile's mean absolute deviation for the target slot (an evening slot
varies more than a night one, so its interval is wider). The interval is
``forecast + spread * [q_lo, q_hi]`` with the ``alpha/2`` and ``1 - alpha/2`` quantiles of the
band's last ``window`` scores: asymmetric, as household load is (it spikes up, rarely down).

One score per target and band, the median over the issues in the band that forecast it: those
issues' errors are nearly the same (the profile does not depend on the issue), so keeping each
would fill the window with a few hours' worth of copies.

``alpha`` starts at the nominal miscoverage and moves by ``step * (nominal - missed)`` per target
and band (Gibbs & Candes 2021, "Adaptive conformal inference under distribution shift"), where
``missed`` is the share of those issues whose interval, as issued, missed the actual: bounds
react to recent errors, so judging a day-old forecast by today's bounds would count today's
widening as coverage it never had.

River's ``conf`` module wraps a single regressor without horizons or a rolling window, so this
is written out here: an int16 ring of scores in hundredths, and a quantile.
"""

from __future__ import annotations

from array import array
from statistics import median

_MIN_SCORES = 20
_PRIOR = (-1.6, 1.6)  # about an 80 % interval for a normal error measured in mean deviations
_UNIT = 100  # scores are kept in hundredths of a spread
_LIMIT = 32767


class ConformalBand:
    __slots__ = ("nominal", "step", "alpha", "scores", "count", "lo", "hi")

    def __init__(self, coverage: float, window: int, step: float) -> None:
        self.nominal = 1.0 - coverage
        self.step = step
        self.alpha = self.nominal
        self.scores = array("h", [0]) * window
        self.count = 0
        self.lo, self.hi = _PRIOR

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    def bounds(self) -> tuple[float, float]:
        """The current normalised bounds (recomputed by ``recalibrate``)."""
        return self.lo, self.hi

    def recalibrate(self) -> None:
        n = min(self.count, len(self.scores))
        if n < _MIN_SCORES:
            return
        ordered = sorted(self.scores[:n])
        a = min(max(self.alpha, 0.0), 1.0)
        self.lo = _quantile(ordered, a / 2) / _UNIT
        self.hi = _quantile(ordered, 1 - a / 2) / _UNIT

    def update(self, scores: list[float], issued: list[tuple[float, float]]) -> None:
        """Take one matured target: the normalised errors of the issues in this band that
        forecast it, and the normalised bounds each was issued with."""
        missed = sum(1 for z, (lo, hi) in zip(scores, issued) if not lo <= z <= hi) / len(scores)
        self.alpha += self.step * (self.nominal - missed)
        self.alpha = min(max(self.alpha, -0.5), 1.5)  # bounded drift; clipped when used
        z = round(median(scores) * _UNIT)
        self.scores[self.count % len(self.scores)] = max(-_LIMIT, min(_LIMIT, z))
        self.count += 1


def _quantile(ordered: list[int], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    i = int(pos)
    if i + 1 >= len(ordered):
        return float(ordered[-1])
    return ordered[i] + (pos - i) * (ordered[i + 1] - ordered[i])
