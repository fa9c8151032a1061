"""One home's forecasting at one resolution: history, candidates, selection, intervals, scores.

``close_slots`` takes the completed slots of an hour (learning and scoring when it has a value);
``issue`` makes the forecasts for the next ``horizon_hours`` at an hour boundary.

When a target slot completes, every issue that forecast it (one per hour over the last day) is
revisited: its features are rebuilt from the history as of that issue (the target's profile
statistics read only earlier days; the issue's context is kept in a 25-row ring), the candidates
are re-evaluated for model selection and conformal calibration, and the online model learns the
(features, actual) pair. Only the forecasts at the scored horizons are stored as issued.
"""

from __future__ import annotations

import math
from array import array
from datetime import datetime, timedelta, timezone

import numpy as np

from pipeline.insights.forecast.calendar import LocalClock
from pipeline.insights.forecast.daytypes import DayTypes, country_of
from pipeline.insights.forecast.features import (
    FEATURES,
    IssueContext,
    day_weights,
    feature_matrix,
    issue_context,
    profile_stats,
    typed_median,
)
from pipeline.insights.forecast.history import SlotRing
from pipeline.insights.forecast.intervals import ConformalBand
from pipeline.insights.forecast.models import (
    BAND_EDGES,
    CANDIDATES,
    QuantileLinear,
    Selector,
    band_of,
    bands_of,
    candidate_predictions,
)
from pipeline.insights.forecast.scoring import PendingForecasts, ScoreBoard
from pipeline.insights.forecast.settings import ForecastSettings
from pipeline.records import Forecast, ForecastScore

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ISSUES = 25
# The lead times (hours from issue to the end of the target's hour) the online model learns
# from, denser where the recent deviation still matters.
_LEARN_LEADS = np.array([1, 2, 3, 4, 6, 9, 13, 18, 24])


def _at(epoch_min: int) -> datetime:
    return _EPOCH + timedelta(minutes=epoch_min)


class _Contexts:
    """The issue contexts of the last 25 hourly issues, with the online model's coefficients as
    they were at each issue, so a forecast revisited at maturity is exactly the one issued."""

    __slots__ = ("made", "known", "numbers")
    _COEF = 5  # offset of the model's coefficients in a row
    _BANDS = 5 + len(FEATURES) + 1  # offset of (lo, hi, chosen candidate) per horizon band
    _WIDTH = _BANDS + 3 * len(BAND_EDGES)

    def __init__(self) -> None:
        self.made = array("q", [-1]) * _ISSUES
        self.known = array("q", [0]) * _ISSUES
        self.numbers = array("f", [0.0]) * (_ISSUES * self._WIDTH)

    def __getstate__(self):
        # Column by column (each number across the issues, then the next): a coefficient or a
        # bound varies little from issue to issue, so its bytes compress better side by side.
        rows = np.frombuffer(self.numbers, dtype=np.float32).reshape(_ISSUES, self._WIDTH)
        return self.made, self.known, array("f", rows.T.tobytes()), "by-column"

    def __setstate__(self, state) -> None:
        self.made, self.known, self.numbers = state[:3]
        if len(state) > 3:  # by column (before: row by row, as kept)
            columns = np.frombuffer(self.numbers, dtype=np.float32).reshape(self._WIDTH, _ISSUES)
            self.numbers = array("f", columns.T.tobytes())

    def put(self, ctx: IssueContext, coefficients: np.ndarray, bands: list[tuple[float, float, int]]) -> None:
        row = (ctx.made_min // 60) % _ISSUES
        w = self._WIDTH
        self.made[row], self.known[row] = ctx.made_min, ctx.known_until
        self.numbers[row * w:row * w + w] = array(
            "f", [ctx.level, ctx.scale, ctx.last_dev, ctx.recent_dev, ctx.level_dev]
            + coefficients.tolist() + [b for band in bands for b in band])

    def get(self, made_min: int) -> tuple[IssueContext, np.ndarray, list[float]] | None:
        """The issue's context, the model's coefficients then, and per horizon band the
        normalised interval bounds and the chosen candidate then (lo, hi, chosen; flat)."""
        row = (made_min // 60) % _ISSUES
        if self.made[row] != made_min:
            return None
        w = self._WIDTH
        numbers = self.numbers[row * w:row * w + w]
        return (IssueContext(made_min, self.known[row], *numbers[:self._COEF]),
                np.array(numbers[self._COEF:self._BANDS], dtype=np.float64),
                numbers[self._BANDS:].tolist())


class ResolutionForecaster:
    def __init__(self, resolution: int, settings: ForecastSettings) -> None:
        self.res = resolution
        self.settings = settings
        self.per_day = 1440 // resolution
        self.horizon = settings.horizon_hours * 60
        self.days = settings.history_days if resolution >= 60 else settings.sub_hourly_history_days
        # One spare day: a target is revisited up to a day after the issue that read its history.
        self.history = SlotRing((self.days + 1) * self.per_day)
        self.model = QuantileLinear(settings.learning_rate, settings.intercept_learning_rate)
        self.selector = Selector(settings.selection_half_life)
        self.bands = [ConformalBand(settings.interval_coverage, settings.conformal_window,
                                    settings.conformal_step) for _ in BAND_EDGES]
        self.contexts = _Contexts()
        scored = tuple(h for h in settings.score_horizons_min if h % resolution == 0 and h <= self.horizon)
        self.pending = PendingForecasts(scored)
        self.board = ScoreBoard(scored)
        self._weights: np.ndarray | None = None
        self._days: DayTypes | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_weights"] = None  # derived from the settings
        state.pop("_days", None)  # likewise
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._days = None

    @property
    def day_types(self) -> DayTypes:
        if self._days is None:
            self._days = DayTypes(country_of(self.settings.timezone,
                                          getattr(self.settings, "holiday_country", "")))
        return self._days

    def _same_type(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: is its local day off, and (rows x profile days) is each earlier day of the
        same type."""
        day = rows * self.res // 1440
        lags = np.arange(1, self.days + 1)
        first = int(day.min()) - self.days if len(day) else 0
        span = np.arange(first, (int(day.max()) if len(day) else 0) + 1)
        off_span = self.day_types.off(span)
        off = off_span[day - first]
        return off, off_span[day[:, None] - lags[None, :] - first] == off[:, None]

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            self._weights = day_weights(self.days, self.settings.profile_half_life_days)
        return self._weights

    # ------------------------------------------------------------------ learning and scoring

    def close_slots(self, slots: list[tuple[int, float | None]], clock: LocalClock) -> None:
        """Take the completed slots of an hour (UTC start minute, mean W or None when missing):
        store them, then learn from and score those with a value."""
        matured = []
        for start, value in slots:
            row = clock.local_slot(start, self.res)
            self.history.put(row, math.nan if value is None else value)
            if value is not None:
                matured.append((start, row, value))
        if matured:
            self._mature(matured)

    def _mature(self, matured: list[tuple[int, int, float]]) -> None:
        rows = np.array([row for _, row, _ in matured])
        # (index in matured, issue that forecast it, the model's coefficients and the bands'
        # bounds and choices at that issue)
        pairs: list[tuple[int, IssueContext, np.ndarray, list[float]]] = []
        issues: dict[int, tuple | None] = {}  # the slots of one hour share their issues
        for i, (start, _, _) in enumerate(matured):
            first = -(-(start + self.res - self.horizon) // 60) * 60
            for made in range(first, start + 1, 60):
                found = issues[made] = issues[made] if made in issues else self.contexts.get(made)
                if found is not None:
                    pairs.append((i, *found))
        # What the earliest issue of each slot knew (the later ones knew more only on the day
        # the clocks spring forward).
        known = rows - 1
        for i, ctx, _, _ in pairs:
            known[i] = min(known[i], ctx.known_until)
        stats = profile_stats(self.history, rows, self.per_day, self.weights, known)
        for i, (start, _, actual) in enumerate(matured):
            end = start + self.res
            for k, horizon in enumerate(self.pending.horizons):
                issued = self.pending.get(end - horizon, k)
                if issued is not None:
                    self.board.add(k, actual, *issued, float(stats.day[i]), float(stats.week[i]))
        if pairs:
            self._learn(matured, rows, known, stats, pairs)

    def _learn(self, matured, rows: np.ndarray, known: np.ndarray, stats,
               pairs: list[tuple[int, IssueContext, np.ndarray, list[float]]]) -> None:
        """Revisit every issue that forecast a matured slot: candidate errors for the selection,
        conformal scores for the intervals (both with the forecasts exactly as issued), and one
        learning step of the online model each."""
        which = np.array([i for i, _, _, _ in pairs])
        level = np.array([c.level for _, c, _, _ in pairs])
        median = stats.median[which]
        base = np.where(np.isfinite(median), median, level)
        keep = np.isfinite(base)
        if not keep.all():
            pairs = [p for p, k in zip(pairs, keep.tolist()) if k]
            which, base = which[keep], base[keep]
            if not pairs:
                return
        ctxs = [c for _, c, _, _ in pairs]
        coefficients = np.stack([w for _, _, w, _ in pairs])
        scale = np.array([c.scale for c in ctxs])
        actual = np.array([matured[i][2] for i in which.tolist()])
        end = np.array([matured[i][0] for i in which.tolist()]) + self.res
        horizons = end - np.array([c.made_min for c in ctxs])
        off, same = self._same_type(rows)  # per matured slot (several issues share one)
        weekend = off[which]
        typed = typed_median(self.history, rows, self.per_day, self.weights, known, same)[which]
        x = feature_matrix(scale, np.array([c.last_dev for c in ctxs]),
                           np.array([c.recent_dev for c in ctxs]),
                           np.array([c.level_dev for c in ctxs]), base, stats.day[which],
                           stats.week[which], stats.weekly[which], horizons, weekend)
        correction = coefficients[:, 0] + np.einsum("ij,ij->i", x, coefficients[:, 1:])
        preds = candidate_predictions(base, scale, correction, typed)
        errors = np.abs(actual[:, None] - preds) / scale[:, None]
        bands = bands_of(horizons)
        for band in np.unique(bands).tolist():
            self.selector.update(band, errors[bands == band])
        # The forecast and the normalised bounds each issue made, per its band.
        issued = np.array([p[3] for p in pairs]).reshape(len(pairs), -1, 3)[np.arange(len(pairs)), bands]
        chosen = preds[np.arange(len(pairs)), issued[:, 2].astype(np.int64)]
        z = ((actual - chosen) / _spreads(stats.spread[which], scale)).tolist()
        groups: dict[tuple[int, int], list[int]] = {}
        for j, key in enumerate(zip(which.tolist(), bands.tolist())):
            groups.setdefault(key, []).append(j)
        lo, hi = issued[:, 0].tolist(), issued[:, 1].tolist()
        for (_, band), js in groups.items():
            self.bands[band].update([z[j] for j in js], [(lo[j], hi[j]) for j in js])
        # Learn from the issues at a few lead times only: a slot's issues share most features,
        # so the rest would repeat them (and cost three times the learning steps).
        lead = -(-horizons // 60)
        learn = np.isin(lead, _LEARN_LEADS)
        self.model.learn(x[learn], ((actual - base) / scale)[learn])

    # ------------------------------------------------------------------------------ issuing

    def issue(self, made_min: int, clock: LocalClock, home_id: str) -> list[Forecast]:
        res, per_day = self.res, self.per_day
        known = clock.local_slot(made_min - res, res)
        count = self.horizon // res
        starts = range(made_min, made_min + self.horizon, res)
        target_rows = _local_slots(clock, made_min, count, res)
        recent_rows = np.arange(known - per_day + 1, known + 1)
        stats = profile_stats(self.history, np.concatenate([recent_rows, target_rows]), per_day,
                              self.weights, known)
        week = self.history.take(np.arange(known - 7 * per_day + 1, known + 1))
        level = _nanmean(week)
        if not math.isfinite(level):
            level = _nanmean(np.frombuffer(self.history.values, dtype=np.float32))
        ctx = issue_context(made_min, known, self.history.take(recent_rows), stats.median[:per_day],
                            level, res)
        for band in self.bands:
            band.recalibrate()
        choices = [self.selector.best(b) for b in range(len(BAND_EDGES))]
        self.contexts.put(ctx, self.model.coefficients(),
                          [(*band.bounds(), c) for band, c in zip(self.bands, choices)])
        if not math.isfinite(level):
            return []  # nothing known about this home yet
        median = stats.median[per_day:]
        base = np.where(np.isfinite(median), median, level)
        horizons = res * np.arange(1, count + 1)
        weekend, same = self._same_type(target_rows)
        x = feature_matrix(np.array(ctx.scale), np.array(ctx.last_dev), np.array(ctx.recent_dev),
                           np.array(ctx.level_dev), base, stats.day[per_day:],
                           stats.week[per_day:], stats.weekly[per_day:], horizons, weekend)
        preds = candidate_predictions(base, np.array(ctx.scale), self.model.predict(x),
                                      typed_median(self.history, target_rows, per_day, self.weights,
                                                   known, same))
        bands = bands_of(horizons)
        chosen = np.array(choices)[bands]
        floor = self.history.minimum()
        if not math.isfinite(floor):
            floor = -math.inf
        yhat = np.maximum(preds[np.arange(count), chosen], floor)
        bounds = np.array([band.bounds() for band in self.bands])[bands]
        spread = _spreads(stats.spread[per_day:], np.full(count, ctx.scale))
        # The interval always holds its own forecast (early on, or after a shift, the recent
        # errors can all have one sign).
        lower = np.maximum(np.minimum(yhat + bounds[:, 0] * spread, yhat), floor)
        upper = np.maximum(yhat + bounds[:, 1] * spread, yhat)
        made_at = _at(made_min)
        self.pending.start(made_min)
        scored = {h: i for i, h in enumerate(self.pending.horizons)}
        out = []
        for start, horizon, y, lo, hi, c in zip(
                starts, horizons.tolist(), yhat.tolist(), lower.tolist(), upper.tolist(), chosen.tolist(),
                strict=True):
            out.append(Forecast(home_id, made_at, _at(start), res, horizon, y, lo, hi, CANDIDATES[c]))
            if horizon in scored:
                self.pending.put(made_min, scored[horizon], y, lo, hi)
        for i, horizon in enumerate(self.board.horizons):
            self.board.models[i] = CANDIDATES[self.selector.best(band_of(horizon))]
        return out

    def scores(self, home_id: str, at_min: int) -> list[ForecastScore]:
        return self.board.records(home_id, self.res, _at(at_min))


def _local_slots(clock: LocalClock, first_min: int, count: int, res: int) -> np.ndarray:
    """Local slot numbers of ``count`` consecutive UTC slots, vectorised unless the clocks
    change within them."""
    last = first_min + (count - 1) * res
    offset = clock.offset_min(first_min)
    if clock.offset_min(last) == offset:
        return (first_min + offset + res * np.arange(count)) // res
    return np.array([clock.local_slot(first_min + k * res, res) for k in range(count)])


def _spreads(spread: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The profile's deviation per slot, floored so a flat history still gives a usable interval
    unit; half the level where the slot has no history."""
    floor = np.maximum(0.05 * scale, 1.0)
    return np.where(np.isfinite(spread), np.maximum(spread, floor), np.maximum(0.5 * scale, 1.0))


def _nanmean(values: np.ndarray) -> float:
    ok = values[np.isfinite(values)]
    return float(ok.mean()) if ok.size else math.nan
