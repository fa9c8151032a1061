"""Features rebuilt from the slot history as of an issue time.

Two kinds:

* **Profile statistics of a slot** (``profile_stats``): what earlier days said about the same local
  wall-clock slot: the weighted median (the profile forecast), its spread, the two seasonal-naive
  values and the weekly median. They only read days before the slot, so for targets up to a day
  ahead they are the same at the issue time and when the target matures; ``known_until`` masks
  what an issue could not know yet (only at the spring DST change, when a day has 23 hours).
* **Issue context** (``IssueContext``): how the home was doing when the forecast was issued
  (its level, how far its last hours ran above or below their profile). Five numbers per issue,
  kept for the 24 issues whose targets are still open.

``river_features`` turns both into the online model's input for one (issue, target, horizon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.insights.forecast.history import SlotRing

_CLIP = 10.0


@dataclass(frozen=True, slots=True)
class ProfileStats:
    """Per row (slot) arrays; NaN where the history has nothing."""

    median: np.ndarray  # day-weighted median of the same local slot on earlier days
    spread: np.ndarray  # day-weighted mean absolute deviation around that median
    day: np.ndarray  # the same slot one day earlier (seasonal naive, daily)
    week: np.ndarray  # the same slot seven days earlier (seasonal naive, weekly)
    weekly: np.ndarray  # median of the same slot 1-4 weeks earlier (same weekday)


def day_weights(days: int, half_life_days: float) -> np.ndarray:
    return 0.5 ** (np.arange(days) / half_life_days)


# The day-type median's weights: a day of the other type counts this much of one of the same type
# (habits are shared, timings differ), a neighbouring slot half its own (pooling three slots per
# day steadies a median of few days against a load that shifts by an hour).
OTHER_TYPE_WEIGHT = 0.35
NEIGHBOUR_WEIGHT = 0.5


def profile_stats(ring: SlotRing, rows: np.ndarray, per_day: int, weights: np.ndarray,
                  known_until: int | np.ndarray) -> ProfileStats:
    """Statistics of the same local slot on each of the last ``len(weights)`` days, per row;
    ``known_until`` (one for all rows, or one per row) hides later slots."""
    days = len(weights)
    lags = per_day * np.arange(1, days + 1)
    if isinstance(known_until, np.ndarray):
        known_until = known_until[:, None]
    values = ring.take(rows[:, None] - lags[None, :], known_until)
    w = np.where(np.isnan(values), 0.0, weights[None, :])
    order = np.argsort(values, axis=1)  # NaN last
    sorted_v = np.take_along_axis(values, order, axis=1)
    cum = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    total = cum[:, -1]
    pick = np.argmax(cum >= 0.5 * total[:, None], axis=1)
    median = sorted_v[np.arange(len(rows)), pick]
    empty = total <= 0
    median[empty] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.nansum(w * np.abs(values - median[:, None]), axis=1) / total
    spread[empty] = np.nan
    weekly = _row_nanmedian(values[:, 6:min(days, 28):7])
    return ProfileStats(median, spread, values[:, 0].copy(),
                        values[:, 6].copy() if days >= 7 else np.full(len(rows), np.nan), weekly)


def typed_median(ring: SlotRing, rows: np.ndarray, per_day: int, weights: np.ndarray,
                 known_until: int | np.ndarray, same_type: np.ndarray) -> np.ndarray:
    """The day-type median per row: the same local slot and its two neighbours on each of the
    last ``len(weights)`` days, days of the other type than the row's (``same_type``: rows x
    days) weighing ``OTHER_TYPE_WEIGHT``. The later neighbour of the slot one day earlier is
    left out: a day-ahead issue does not know it yet, and a forecast must read the same history
    whatever its horizon (it is revisited at maturity exactly as issued)."""
    lags = per_day * np.arange(1, len(weights) + 1)
    if isinstance(known_until, np.ndarray):
        known_until = known_until[:, None]
    values = ring.take(rows[:, None] - lags[None, :], known_until)
    day_w = weights[None, :] * np.where(same_type, 1.0, OTHER_TYPE_WEIGHT)
    before = ring.take(rows[:, None] - lags[None, :] - 1, known_until)
    after = ring.take(rows[:, None] - lags[None, 1:] + 1, known_until)
    v = np.concatenate([values, before, after], axis=1)
    w = np.concatenate([day_w, NEIGHBOUR_WEIGHT * day_w, NEIGHBOUR_WEIGHT * day_w[:, 1:]], axis=1)
    return _weighted_median(v, w)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = np.where(np.isnan(values), 0.0, weights)
    order = np.argsort(values, axis=1)  # NaN last
    sorted_v = np.take_along_axis(values, order, axis=1)
    cum = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    total = cum[:, -1]
    out = sorted_v[np.arange(len(values)), np.argmax(cum >= 0.5 * total[:, None], axis=1)]
    out[total <= 0] = np.nan
    return out


@dataclass(frozen=True, slots=True)
class IssueContext:
    made_min: int  # UTC epoch minute of the issue
    known_until: int  # local slot number of the last slot complete at the issue
    level: float  # the home's mean power over the last 7 days (W); NaN when nothing is known
    scale: float  # the level floored at 1 W: the unit of residuals and features
    last_dev: float  # last slot minus its profile, in scale units
    recent_dev: float  # mean over the last 3 hours of (value - profile), in scale units
    level_dev: float  # the same over the last 24 hours


def issue_context(made_min: int, known_until: int, recent_values: np.ndarray,
                  recent_profile: np.ndarray, level: float, res: int) -> IssueContext:
    """From the values and profile medians of the last day's slots (oldest first)."""
    scale = level if math.isfinite(level) and level > 1.0 else 1.0
    with np.errstate(invalid="ignore"):
        dev = (recent_values - recent_profile) / scale
    per_3h = max(1, 180 // res)
    return IssueContext(made_min, known_until, level, scale, _finite(dev[-1]),
                        _nanmean(dev[-per_3h:]), _nanmean(dev))


FEATURES = ("day", "week", "weekly", "last_1h", "last_4h", "recent_8h", "level", "weekend")


def feature_matrix(scale: np.ndarray, last_dev: np.ndarray, recent_dev: np.ndarray,
                   level_dev: np.ndarray, median: np.ndarray, day: np.ndarray, week: np.ndarray,
                   weekly: np.ndarray, horizon_min: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """The online model's input, one row per (issue, target), columns in ``FEATURES`` order:
    the seasonal-naive values and the weekly median as deviations from the profile, the issue's
    recent deviation from the profile fading with the horizon, its 24-hour level deviation, and
    the weekend. Deviations are in units of the home's level; missing ones are 0 (no news).
    Arguments broadcast against each other."""
    h = horizon_min / 60.0
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = np.broadcast_arrays(
            (day - median) / scale, (week - median) / scale, (weekly - median) / scale,
            last_dev * np.exp(-h), last_dev * np.exp(-h / 4), recent_dev * np.exp(-h / 8),
            level_dev, weekend.astype(np.float64))
    x = np.stack(cols, axis=1)
    np.nan_to_num(x, copy=False, nan=0.0, posinf=_CLIP, neginf=-_CLIP)
    return np.clip(x, -_CLIP, _CLIP, out=x)


def _row_nanmedian(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row); np.nanmedian is slow on
    small rows."""
    rows = np.arange(values.shape[0])
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    ordered = np.sort(values, axis=1)  # NaN last
    n = np.isfinite(ordered).sum(axis=1)
    out = 0.5 * (ordered[rows, np.maximum(n - 1, 0) // 2] + ordered[rows, n // 2])
    out[n == 0] = np.nan
    return out


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _nanmean(a: np.ndarray) -> float:
    ok = a[np.isfinite(a)]
    return float(ok.mean()) if ok.size else 0.0
