"""The candidate forecasters of a home and the per-home choice between them.

Candidates, all predicting the median (MAE is minimised by the median, and household load is
skewed with rare high spikes, so a mean-seeking model overshoots most hours):

* ``profile_median``: the day-weighted median of the same local slot over the last weeks (see
  ``features.profile_stats``). Robust, needs no training, and hard to beat a day ahead.
* ``river_quantile_linear``: River's online ``LinearRegression`` with the quantile (pinball) loss
  at 0.5, learning a correction to the profile from the seasonal-naive values, the weekly median,
  the recent deviation from the profile (fading with the horizon) and the weekend. It wins at
  short horizons, where the last hours say a lot.
* ``blend``: the mean of the two; averaging two errors that are not fully correlated often beats
  both in between.
* ``profile_typed``: the day-type median (see ``features.profile_stats``): working days from
  working days, weekends and public holidays mostly from days off, the slot pooled with its
  neighbours. Better a day ahead for homes whose days off differ from their working days.

``Selector`` keeps, per horizon band, an exponentially weighted mean of each candidate's absolute
error (in units of the home's level) as targets mature, and the forecast issued is the candidate
with the lowest: a per-home choice that can differ between the next hour and tomorrow.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left

import numpy as np
from river import linear_model, optim

from pipeline.insights.forecast.features import FEATURES

CANDIDATES = ("profile_median", "river_quantile_linear", "blend", "profile_typed")
# The candidates of snapshots from before ``profile_typed`` (new ones are appended, so a kept
# candidate index keeps its meaning).
_OLD_CANDIDATES = 3
# Horizon bands (upper edges, minutes) within which one candidate is chosen and one interval
# is calibrated: the next hour, 1-3 h, 3-6 h, 6-12 h, 12-24 h.
BAND_EDGES = (60, 180, 360, 720, 1440)
_TARGET_CLIP = 10.0


def band_of(horizon_min: int) -> int:
    return min(bisect_left(BAND_EDGES, horizon_min), len(BAND_EDGES) - 1)


def bands_of(horizons_min: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(BAND_EDGES, horizons_min, side="left"), len(BAND_EDGES) - 1)


class QuantileLinear:
    """River's online linear regression with the pinball loss at the median, on residuals from
    the profile in units of the home's level."""

    __slots__ = ("model",)

    def __init__(self, learning_rate: float, intercept_learning_rate: float) -> None:
        # AdaGrad: per-feature steps, so the strong short-horizon features (the last hour's
        # deviation) learn fast while the weak ones stay near zero instead of adding noise.
        self.model = linear_model.LinearRegression(
            optimizer=optim.AdaGrad(learning_rate),
            loss=optim.losses.Quantile(0.5),
            intercept_lr=intercept_learning_rate,
        )

    def __getstate__(self):
        # River pickles the model with its optimizer, loss, schedules and a dict per feature
        # (about 940 bytes); its state is the step count, the intercept and two numbers per
        # feature. Keys stay in their learned order (the dot product sums in that order).
        m = self.model
        g2 = m.optimizer.g2
        if not set(m._weights) | set(g2) <= set(FEATURES):
            return m  # a feature this class never feeds: River's own pickle
        return (m.optimizer.lr.learning_rate, m.intercept_lr.learning_rate, m.optimizer.n_iterations,
                m.intercept, bytes(FEATURES.index(k) for k in m._weights), array("d", (m._weights[k] for k in m._weights)),
                bytes(FEATURES.index(k) for k in g2), array("d", g2.values()))

    def __setstate__(self, state) -> None:
        if isinstance(state, linear_model.LinearRegression):  # before the compact layout
            self.model = state
            return
        rate, intercept_rate, steps, intercept, keys, weights, g2_keys, g2 = state
        QuantileLinear.__init__(self, rate, intercept_rate)
        m = self.model
        m.optimizer.n_iterations = steps
        m.intercept = intercept
        for k, w in zip(keys, weights):
            m._weights[FEATURES[k]] = w
        for k, g in zip(g2_keys, g2):
            m.optimizer.g2[FEATURES[k]] = g

    def coefficients(self) -> np.ndarray:
        """The intercept, then the weights in ``FEATURES`` order."""
        weights = self.model.weights
        return np.array([self.model.intercept] + [weights.get(name, 0.0) for name in FEATURES])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``predict_one`` for every row of a ``FEATURES`` matrix at once (the pinball loss's
        mean function is the identity, so this is the intercept plus the dot product)."""
        c = self.coefficients()
        return c[0] + x @ c[1:]

    def learn(self, x: np.ndarray, residuals: np.ndarray) -> None:
        clipped = np.clip(np.nan_to_num(residuals), -_TARGET_CLIP, _TARGET_CLIP)
        for row, r in zip(x.tolist(), clipped.tolist()):
            self.model.learn_one(dict(zip(FEATURES, row)), r)


def candidate_predictions(profile: np.ndarray, scale: np.ndarray, correction: np.ndarray,
                          typed: np.ndarray) -> np.ndarray:
    """The candidates' forecasts (W), one row per forecast, columns in ``CANDIDATES`` order
    (the day-type median falls back to the profile where it has no days)."""
    river = profile + scale * correction
    typed = np.where(np.isfinite(typed), typed, profile)
    return np.stack(np.broadcast_arrays(profile, river, 0.5 * (profile + river), typed), axis=1)


class Selector:
    """Exponentially weighted absolute error per (band, candidate)."""

    __slots__ = ("half_life", "errors", "counts")

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.errors = array("f", [0.0]) * (len(BAND_EDGES) * len(CANDIDATES))
        self.counts = array("I", [0]) * len(BAND_EDGES)

    def __getstate__(self):
        return self.half_life, self.errors, self.counts

    def __setstate__(self, state) -> None:
        self.half_life, self.errors, self.counts = state
        old = len(self.errors) // len(BAND_EDGES)
        if old < len(CANDIDATES):  # a snapshot from before a candidate was added
            errors = array("f")
            for band in range(len(BAND_EDGES)):
                row = self.errors[band * old:(band + 1) * old]
                # A new candidate starts with the profile's error: it has to earn its choice.
                errors.extend(row + array("f", [row[0]]) * (len(CANDIDATES) - old))
            self.errors = errors

    def best(self, band: int) -> int:
        if self.counts[band] == 0:
            return 0
        row = band * len(CANDIDATES)
        errs = self.errors[row:row + len(CANDIDATES)]
        return min(range(len(CANDIDATES)), key=errs.__getitem__)

    def update(self, band: int, abs_errors: np.ndarray) -> None:
        """Take the candidates' absolute errors (one row per matured forecast) in one band."""
        k = len(abs_errors)
        n = self.counts[band] = self.counts[band] + k
        # A running mean until the window is full, then exponential forgetting; a batch counts
        # as k steps towards its mean.
        rate = max(k / n, 1.0 - (1.0 - math.log(2) / self.half_life) ** k)
        row = band * len(CANDIDATES)
        errors = self.errors
        for i, e in enumerate(abs_errors.mean(axis=0).tolist()):
            errors[row + i] += rate * (e - errors[row + i])
