"""Measured savings: what a home used after it accepted advice, against what it would have used.

The method follows CalTRACK's daily methods (the basis of OpenEEmeter, used by utilities to pay
for measured savings): a baseline model of daily energy fitted on the home's own days before the
change, projected over the days after it; the saving is projection minus measurement. The model
is CalTRACK's: an intercept, plus heating and cooling degree-days with a balance point chosen from
a grid when temperatures are given and the terms are positive and significant; we add a weekend
(and public holiday) term, which CalTRACK's daily model leaves out and which matters for homes
without temperature data (most of ours). Its uncertainty is ASHRAE Guideline 14's fractional
savings uncertainty, with the autocorrelation of daily residuals (a cold week is cold for seven
days, so seven days are not seven independent errors).

Why not the ``eemeter`` package itself: its 4.x releases need numba, nlopt, fdasrsf and
scikit-fda (hundreds of MB and native builds) and its daily model requires a temperature series;
the equations it implements for the daily case are short and are written out here, and tests
check them against a known step change injected into real data.

A load shift saves money, not energy: its measure is the price paid per kWh by the shifted device
before and after (same tariff), times the energy used after, with the uncertainty of the
difference of the two daily means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from scipy import stats

HDD_BALANCE_POINTS_C = tuple(range(10, 21))  # CalTRACK searches 55-65 F for HDD...
CDD_BALANCE_POINTS_C = tuple(range(18, 27))  # ...and 65-75 F for CDD; a little wider here
MIN_BASELINE_DAYS = 28
MIN_REPORTING_DAYS = 14
CONFIDENCE = 0.90
# ASHRAE Guideline 14's empirical factor for the uncertainty of a sum of predictions.
_ASHRAE_FACTOR = 1.26


class SavingsError(ValueError):
    """Too little or unusable data for a measurement; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: date
    kwh: float
    temperature_c: float | None = None  # the day's mean outdoor temperature, when known
    cost: float | None = None  # what the day's energy cost (for a load shift)


@dataclass(frozen=True, slots=True)
class BaselineModel:
    """Daily kWh = intercept + weekend x [weekend or holiday] + hdd x HDD(bp) + cdd x CDD(bp)."""

    intercept: float
    weekend: float
    hdd: float
    hdd_balance_c: float | None
    cdd: float
    cdd_balance_c: float | None
    rmse: float  # of daily residuals, with the model's degrees of freedom
    n: int  # baseline days
    parameters: int
    autocorrelation: float  # lag-1 of the residuals, clipped to [0, 0.95]
    mean_kwh: float
    holidays: frozenset[date] = frozenset()

    def predict(self, day: date, temperature_c: float | None = None) -> float:
        value = self.intercept + self.weekend * _weekend(day, self.holidays)
        if self.hdd_balance_c is not None or self.cdd_balance_c is not None:
            if temperature_c is None:
                raise SavingsError(f"the baseline uses temperature; {day} has none")
            if self.hdd_balance_c is not None:
                value += self.hdd * max(0.0, self.hdd_balance_c - temperature_c)
            if self.cdd_balance_c is not None:
                value += self.cdd * max(0.0, temperature_c - self.cdd_balance_c)
        return max(0.0, value)

    @property
    def describe(self) -> str:
        terms = [f"{self.intercept:.2f} kWh/day"]
        if self.weekend:
            terms.append(f"{self.weekend:+.2f} on weekends and holidays")
        if self.hdd_balance_c is not None:
            terms.append(f"{self.hdd:.2f} per heating degree-day below {self.hdd_balance_c:g} °C")
        if self.cdd_balance_c is not None:
            terms.append(f"{self.cdd:.2f} per cooling degree-day above {self.cdd_balance_c:g} °C")
        return ", ".join(terms) + f" (fitted on {self.n} days, typical daily error {self.rmse:.2f} kWh)"


@dataclass(frozen=True, slots=True)
class Savings:
    baseline_kwh: float  # what the model says the reporting days would have used
    actual_kwh: float
    saved_kwh: float
    uncertainty_kwh: float  # half-width of the CONFIDENCE interval of saved_kwh
    days: int
    money: float | None = None  # saved_kwh x price (or the load shift's saving)
    money_uncertainty: float | None = None
    method: str = "daily baseline"

    @property
    def fraction(self) -> float:
        return self.saved_kwh / self.baseline_kwh if self.baseline_kwh > 0 else 0.0

    @property
    def significant(self) -> bool:
        """The saving is distinguishable from nothing at the stated confidence."""
        if self.money is not None and self.method == "price paid per kWh":
            return abs(self.money) > (self.money_uncertainty or 0.0)
        return abs(self.saved_kwh) > self.uncertainty_kwh

    def per_month(self, value: float) -> float:
        return value * 30.4375 / self.days


def _weekend(day: date, holidays: frozenset[date]) -> float:
    return 1.0 if day.weekday() >= 5 or day in holidays else 0.0


def _design(days: Sequence[DailyUsage], holidays: frozenset[date], hdd_bp: float | None,
            cdd_bp: float | None, weekend: bool) -> np.ndarray:
    cols = [np.ones(len(days))]
    if weekend:
        cols.append(np.array([_weekend(d.day, holidays) for d in days]))
    if hdd_bp is not None:
        cols.append(np.array([max(0.0, hdd_bp - (d.temperature_c or 0.0)) for d in days]))
    if cdd_bp is not None:
        cols.append(np.array([max(0.0, (d.temperature_c or 0.0) - cdd_bp) for d in days]))
    return np.column_stack(cols)


def _significant_positive(x: np.ndarray, y: np.ndarray, beta: np.ndarray, columns: Iterable[int]) -> bool:
    """CalTRACK keeps a degree-day term only when its coefficient is positive with p < 0.1."""
    n, p = x.shape
    residual = y - x @ beta
    sigma2 = float(residual @ residual) / max(1, n - p)
    try:
        cov = sigma2 * np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        return False
    for c in columns:
        se = math.sqrt(max(cov[c, c], 0.0))
        if not beta[c] > 0 or se == 0 or stats.t.sf(beta[c] / se, n - p) * 2 >= 0.1:
            return False
    return True


def fit_baseline(days: Sequence[DailyUsage], holidays: Iterable[date] = ()) -> BaselineModel:
    """The best of the candidate models by adjusted R-squared (CalTRACK's selection)."""
    days = [d for d in days if math.isfinite(d.kwh)]
    if len(days) < MIN_BASELINE_DAYS:
        raise SavingsError(f"a baseline needs at least {MIN_BASELINE_DAYS} complete days before the "
                           f"change; there are {len(days)}")
    hol = frozenset(holidays)
    y = np.array([d.kwh for d in days])
    has_temperature = all(d.temperature_c is not None for d in days)
    has_weekend_mix = len({_weekend(d.day, hol) for d in days}) == 2
    candidates: list[tuple[float | None, float | None]] = [(None, None)]
    if has_temperature:
        candidates += [(h, None) for h in HDD_BALANCE_POINTS_C] + [(None, c) for c in CDD_BALANCE_POINTS_C]
        candidates += [(h, c) for h in HDD_BALANCE_POINTS_C for c in CDD_BALANCE_POINTS_C if h <= c]
    best: tuple[float, BaselineModel] | None = None
    total = float(((y - y.mean()) ** 2).sum())
    for hdd_bp, cdd_bp in candidates:
        for weekend in ((False, True) if has_weekend_mix else (False,)):
            x = _design(days, hol, hdd_bp, cdd_bp, weekend)
            n, p = x.shape
            if n - p < 2:
                continue
            beta, *_ = np.linalg.lstsq(x, y, rcond=None)
            degree_columns = range(1 + weekend, p)
            if (hdd_bp is not None or cdd_bp is not None) and not _significant_positive(x, y, beta, degree_columns):
                continue
            residual = y - x @ beta
            sse = float(residual @ residual)
            adj_r2 = 1 - (sse / (n - p)) / (total / (n - 1)) if total > 0 else 0.0
            if best is not None and adj_r2 <= best[0] + 1e-12:
                continue
            k = 1
            w = float(beta[k]) if weekend else 0.0
            k += weekend
            h = float(beta[k]) if hdd_bp is not None else 0.0
            k += hdd_bp is not None
            c = float(beta[k]) if cdd_bp is not None else 0.0
            rho = float(np.corrcoef(residual[:-1], residual[1:])[0, 1]) if n > 2 and residual.std() > 0 else 0.0
            model = BaselineModel(float(beta[0]), w, h, hdd_bp, c, cdd_bp, math.sqrt(sse / (n - p)), n, p,
                                  min(0.95, max(0.0, rho if math.isfinite(rho) else 0.0)), float(y.mean()), hol)
            best = (adj_r2, model)
    assert best is not None  # the intercept-only model always fits
    return best[1]


def measure_savings(model: BaselineModel, reporting: Sequence[DailyUsage], price_per_kwh: float | None = None,
                    comparison: Sequence[tuple[BaselineModel, Sequence[DailyUsage]]] = ()) -> Savings:
    """Saved energy over ``reporting`` days, with ASHRAE Guideline 14's uncertainty.

    ``comparison``: homes that did not change (their baseline models and their reporting days).
    Without temperatures a baseline cannot know that spring is coming; homes nearby that changed
    nothing show how much their use drifted against their own baselines, and the projection is
    scaled by that drift day by day (a comparison group, as utilities' programme evaluations use).
    Its own error adds to the uncertainty.
    """
    reporting = [d for d in reporting if math.isfinite(d.kwh)]
    m = len(reporting)
    if m < 1:
        raise SavingsError("no complete days after the change yet")
    predicted = np.array([model.predict(d.day, d.temperature_c) for d in reporting])
    actual = np.array([d.kwh for d in reporting])
    uncertainty = _projection_uncertainty(model, float(predicted.sum()), m)
    method = "daily baseline"
    if comparison:
        days = [d.day for d in reporting]
        ratio, relative_u = _comparison_drift(comparison, days)
        predicted = predicted * ratio
        uncertainty = math.hypot(_projection_uncertainty(model, float(predicted.sum()), m),
                                 relative_u * float(predicted.sum()))
        placebo = _placebo_relative_error(comparison, days)
        if placebo is not None:
            # Homes that changed nothing, measured the same way against the rest of the group:
            # how far "savings" stray from zero when there are none. Household use wanders more
            # than any model of it says (a guest, a holiday, a new fridge), and the formula's
            # interval covered only 58-79 % of known steps in our tests; the placebo interval
            # holds by construction when the home is like its group.
            uncertainty = max(uncertainty, placebo * float(predicted.sum()))
        method = f"daily baseline with a comparison group of {len(comparison)}"
    base_total = float(predicted.sum())
    saved = base_total - float(actual.sum())
    money = money_u = None
    if price_per_kwh is not None:
        money, money_u = saved * price_per_kwh, uncertainty * price_per_kwh
    return Savings(base_total, float(actual.sum()), saved, uncertainty, m, money, money_u, method)


def _projection_uncertainty(model: BaselineModel, base_total: float, m: int) -> float:
    # ASHRAE 14: dE = t x 1.26 x CV x E_baseline x sqrt((n / n') (1 + 2/n) / m), CV = RMSE / mean.
    n, p, rho = model.n, model.parameters, model.autocorrelation
    n_effective = max(p + 1.0, n * (1 - rho) / (1 + rho))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n_effective - p))
    cv = model.rmse / model.mean_kwh if model.mean_kwh > 0 else 0.0
    return t * _ASHRAE_FACTOR * cv * base_total * math.sqrt((n / n_effective) * (1 + 2 / n) / m)


MIN_PLACEBO_HOMES = 8


def _placebo_relative_error(comparison: Sequence[tuple[BaselineModel, Sequence[DailyUsage]]],
                            days: Sequence[date]) -> float | None:
    """The CONFIDENCE quantile of |relative "saving"| of each comparison home measured against
    the others; None when the group is too small for a quantile to mean much."""
    if len(comparison) < MIN_PLACEBO_HOMES:
        return None
    wanted = set(days)
    errors = []
    for i, (model, usage) in enumerate(comparison):
        own = [d for d in usage if d.day in wanted and math.isfinite(d.kwh)]
        others = [*comparison[:i], *comparison[i + 1:]]
        if not own:
            continue
        try:
            ratio, _ = _comparison_drift(others, [d.day for d in own])
        except SavingsError:
            continue
        projected = float((np.array([model.predict(d.day, d.temperature_c) for d in own]) * ratio).sum())
        if projected > 0:
            errors.append(abs(projected - sum(d.kwh for d in own)) / projected)
    if len(errors) < MIN_PLACEBO_HOMES:
        return None
    return float(np.quantile(errors, CONFIDENCE))


def _comparison_drift(comparison: Sequence[tuple[BaselineModel, Sequence[DailyUsage]]],
                      days: Sequence[date]) -> tuple[np.ndarray, float]:
    """Per reporting day, the group's measured over projected use; and the relative uncertainty
    of the group's projection over the period (its homes' uncertainties, independent)."""
    wanted = set(days)
    actual = dict.fromkeys(days, 0.0)
    projected = dict.fromkeys(days, 0.0)
    variance = 0.0
    for model, usage in comparison:
        own = [d for d in usage if d.day in wanted and math.isfinite(d.kwh)]
        if not own:
            continue
        total = 0.0
        for d in own:
            p = model.predict(d.day, d.temperature_c)
            actual[d.day] += d.kwh
            projected[d.day] += p
            total += p
        variance += _projection_uncertainty(model, total, len(own)) ** 2
    group_total = sum(projected.values())
    if group_total <= 0:
        raise SavingsError("the comparison group has no days in the reporting period")
    ratio = np.array([actual[d] / projected[d] if projected[d] > 0 else 1.0 for d in days])
    return ratio, math.sqrt(variance) / group_total


def measure_price_shift(before: Sequence[DailyUsage], after: Sequence[DailyUsage]) -> Savings:
    """A load shift's saving: (price paid per kWh before - after) x the kWh used after.

    Each day's price paid is its cost over its energy; days without use say nothing and are left
    out. The uncertainty is Welch's interval of the difference of the two daily means.
    """
    def priced(days: Sequence[DailyUsage]) -> np.ndarray:
        return np.array([d.cost / d.kwh for d in days if d.cost is not None and d.kwh > 1e-6])

    b, a = priced(before), priced(after)
    if len(b) < 3 or len(a) < 3:
        raise SavingsError(f"a load shift is measured over days the device ran: {len(b)} before and "
                           f"{len(a)} after, at least 3 each are needed")
    kwh_after = float(sum(d.kwh for d in after))
    diff = float(b.mean() - a.mean())
    var_b, var_a = b.var(ddof=1) / len(b), a.var(ddof=1) / len(a)
    se = math.sqrt(var_b + var_a)
    if se > 0:
        dof = (var_b + var_a) ** 2 / ((var_b ** 2) / (len(b) - 1) + (var_a ** 2) / (len(a) - 1))
        t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))
    else:
        t = 0.0
    return Savings(kwh_after, kwh_after, 0.0, 0.0, len(after), diff * kwh_after, t * se * kwh_after,
                   "price paid per kWh")


@dataclass(frozen=True, slots=True)
class FleetSavings:
    measured: int
    total_money: float
    total_kwh: float
    median_money_per_month: float
    p10_money_per_month: float
    p90_money_per_month: float
    promises_kept: int  # measured monthly saving at least the promised one
    significant: int


def fleet_report(results: Sequence[tuple[Savings, float]]) -> FleetSavings:
    """Sum and spread of measured savings; ``results`` pairs each with its promised money a month."""
    if not results:
        return FleetSavings(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
    monthly = np.array([s.per_month(s.money or 0.0) for s, _ in results])
    return FleetSavings(
        len(results), float(sum(s.money or 0.0 for s, _ in results)), float(sum(s.saved_kwh for s, _ in results)),
        float(np.median(monthly)), float(np.quantile(monthly, 0.1)), float(np.quantile(monthly, 0.9)),
        sum(1 for (s, promised), got in zip(results, monthly) if got >= promised),
        sum(1 for s, _ in results if s.significant))


def daily_usage(hours: Sequence[tuple[datetime, float, int, float | None]], tz: str,
                min_coverage: float = 0.9) -> list[DailyUsage]:
    """Complete local days from hourly rows ``(hour start UTC, Wh, minutes measured, cost)``.

    A day counts when its measured minutes cover ``min_coverage`` of its length (23 or 25 hours
    on clock-change days); a day with a logger outage would otherwise read as a saving.
    """
    zone = ZoneInfo(tz)
    kwh: dict[date, float] = {}
    minutes: dict[date, int] = {}
    cost: dict[date, float | None] = {}
    for start, wh, measured, money in hours:
        day = start.astimezone(zone).date()
        kwh[day] = kwh.get(day, 0.0) + wh / 1000.0
        minutes[day] = minutes.get(day, 0) + measured
        if money is None or (day in cost and cost[day] is None):
            cost[day] = None
        else:
            cost[day] = (cost.get(day) or 0.0) + money
    out = []
    for day in sorted(kwh):
        midnight = datetime.combine(day, time(0), zone)
        length_min = (datetime.combine(day + timedelta(days=1), time(0), zone) - midnight).total_seconds() / 60
        if minutes[day] >= min_coverage * length_min:
            out.append(DailyUsage(day, kwh[day], cost=cost.get(day)))
    return out
