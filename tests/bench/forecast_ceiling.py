"""How far load history alone can take an hourly day-ahead forecast: the skill of simple and
learned forecasters on the shared datasets, to set beside ``shems evaluate``.

Issue 14 asks for hourly day-ahead skill <= 0.72 on every shared dataset. This evaluation asks
whether any forecaster that reads only the home's own load history (or the fleet's) gets there,
independently of the flow's engine: hourly means in the home's wall-clock time, each target
forecast from what was known 24 hours before it, skill = MAE / the better seasonal-naive MAE
(the engine's definition), over the hours every forecaster could forecast, after a 28-day
warm-up. Forecasters:

* ``wmed_3.5d``, ``wmed_7d``, ``wmed_14d``: the weighted median of the same hour on the last 56
  days, a day's weight halving every 3.5, 7 or 14 days (7 is the engine's ``profile_median``);
* ``pooled_7d``: the same with the neighbouring hours at half weight (the engine's day-type
  median without the day types);
* ``mean_of_medians``: the mean of the four above (a forecast combination);
* ``home_qr``: a linear quantile regression (pinball loss at 0.5, solved exactly with HiGHS) on
  the medians, the 25th and 75th weighted percentiles, both naive values and the 7-day level,
  refitted every 28 days on the home's last 112 days;
* ``fleet_qr`` (datasets with five homes or more): the same features over the home's 7-day
  level, fitted once on the first half of every home's series together, scored on the second
  halves: a model shared across the fleet.

    .venv/bin/python tests/bench/forecast_ceiling.py --data ../shared/data --sgsc-homes 16

Reads ``../shared/data`` (not in a user's clone); prints a table per dataset and, last, one JSON
line ``{"dataset": {"forecaster": median skill over homes, ...}, ...}``. Simplifications against
the engine: an hour counts when 80 % of its raw rows are there (the engine holds values between
minutes), the repeated hour of the autumn clock change is one hour, and stuck-logger hours are
not left out, so its figures are close to but not the same as ``shems evaluate``'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sparse
from scipy.optimize import linprog

HISTORY_DAYS = 56
WARMUP_H = 28 * 24
REFIT_H = 28 * 24
TRAIN_H = 112 * 24
FLEET_ROWS = 40_000


def hourly(frame: pl.DataFrame, ts_col: str, power: pl.Expr, tz: str) -> np.ndarray:
    """Mean power per wall-clock hour on a gapless grid; NaN where under 80 % of the rows are."""
    local = pl.col(ts_col).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    df = (frame.select(local.alias("t"), power.alias("p"))
          .drop_nulls("t").with_columns(pl.col("t").dt.replace_time_zone(None)).sort("t"))
    step_s = df["t"].diff().dt.total_seconds().median()
    per_hour = 3600 / step_s
    h = df.group_by_dynamic("t", every="1h").agg(pl.col("p").mean(), pl.col("p").count().alias("n"))
    grid = pl.DataFrame({"t": pl.datetime_range(h["t"].min(), h["t"].max(), "1h", eager=True)})
    g = grid.join(h, on="t", how="left")
    y = g["p"].to_numpy().astype(float)
    y[g["n"].fill_null(0).to_numpy() < 0.8 * per_hour] = np.nan
    return y


def lagged(y: np.ndarray, lags: np.ndarray) -> np.ndarray:
    out = np.full((len(y), len(lags)), np.nan)
    for j, lag in enumerate(lags.tolist()):
        out[lag:, j] = y[:len(y) - lag]
    return out


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    w = np.where(np.isnan(values), 0.0, np.broadcast_to(weights, values.shape))
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, 1)
    cum = np.cumsum(np.take_along_axis(w, order, 1), 1)
    out = ordered[np.arange(len(values)), np.argmax(cum >= q * cum[:, -1:], 1)]
    out[cum[:, -1] <= 0] = np.nan
    return out


def features(y: np.ndarray) -> dict[str, np.ndarray]:
    """Every forecaster's input for the target hour of each row, known 24 hours before it."""
    lags = 24 * np.arange(1, HISTORY_DAYS + 1)
    same = lagged(y, lags)
    before, after = lagged(y, lags + 1), lagged(y, lags - 1)
    after[:, 0] = np.nan  # the next hour a day earlier is not known a day ahead
    days = np.arange(HISTORY_DAYS)
    w = {hl: 0.5 ** (days / hl) for hl in (3.5, 7.0, 14.0)}
    pooled = np.hstack([same, before, after])
    f = {
        "naive_day": same[:, 0], "naive_week": same[:, 6],
        "wmed_3.5d": weighted_quantile(same, w[3.5], 0.5),
        "wmed_7d": weighted_quantile(same, w[7.0], 0.5),
        "wmed_14d": weighted_quantile(same, w[14.0], 0.5),
        "pooled_7d": weighted_quantile(pooled, np.concatenate([w[7.0], 0.5 * w[7.0], 0.5 * w[7.0]]), 0.5),
        "q25_7d": weighted_quantile(same, w[7.0], 0.25),
        "q75_7d": weighted_quantile(same, w[7.0], 0.75),
    }
    f["mean_of_medians"] = np.mean([f[k] for k in ("wmed_3.5d", "wmed_7d", "wmed_14d", "pooled_7d")], axis=0)
    week = lagged(y, 24 + np.arange(168))
    with np.errstate(all="ignore"):
        level = np.nanmean(week, 1)
    # A level under 1 W (an empty week) is no unit for the fleet model's features.
    f["level"] = np.where((np.isfinite(week).sum(1) >= 84) & (level > 1.0), level, np.nan)
    return f


QR_INPUTS = ("wmed_3.5d", "wmed_7d", "pooled_7d", "q25_7d", "q75_7d", "naive_day", "naive_week")


def median_regression(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients minimising the sum of absolute errors (an LP: x b + u - v = y, u, v >= 0)."""
    n, p = x.shape
    cost = np.concatenate([np.zeros(p), np.full(2 * n, 0.5)])
    a = sparse.hstack([sparse.csr_matrix(x), sparse.identity(n), -sparse.identity(n)]).tocsc()
    result = linprog(cost, A_eq=a, b_eq=y, bounds=[(None, None)] * p + [(0, None)] * (2 * n), method="highs")
    if not result.success:
        raise RuntimeError(f"median regression failed: {result.message}")
    return result.x[:p]


def qr_matrix(f: dict[str, np.ndarray], over_level: bool) -> np.ndarray:
    cols = [f[k] / f["level"] if over_level else f[k] for k in QR_INPUTS]
    return np.column_stack([np.ones(len(cols[0]))] + cols + ([] if over_level else [f["level"]]))


def home_qr(y: np.ndarray, f: dict[str, np.ndarray]) -> np.ndarray:
    x = qr_matrix(f, over_level=False)
    usable = np.isfinite(x).all(1) & np.isfinite(y)
    out = np.full(len(y), np.nan)
    for start in range(WARMUP_H, len(y), REFIT_H):
        # Only targets known at the first issue of the block (24 h before its first target).
        train = np.arange(max(0, start - 24 - TRAIN_H), start - 24)
        train = train[usable[train]]
        if len(train) < 14 * 24:
            continue
        block = np.arange(start, min(len(y), start + REFIT_H))
        out[block] = x[block] @ median_regression(x[train], y[train])
    return out


SHOWN = ("wmed_3.5d", "wmed_7d", "wmed_14d", "pooled_7d", "mean_of_medians", "home_qr", "fleet_qr")


def skills(y: np.ndarray, forecasts: dict[str, np.ndarray], scored: np.ndarray) -> dict[str, float]:
    ok = scored & np.isfinite(y) & np.isfinite(forecasts["naive_day"]) & np.isfinite(forecasts["naive_week"])
    for name in SHOWN:
        if name in forecasts:
            ok &= np.isfinite(forecasts[name])
    mae = {k: float(np.mean(np.abs(y[ok] - v[ok]))) for k, v in forecasts.items()}
    base = min(mae["naive_day"], mae["naive_week"])
    return {k: mae[k] / base for k in SHOWN if k in mae} | {"hours": int(ok.sum())}


def evaluate(name: str, homes: dict[str, np.ndarray]) -> dict[str, float]:
    started = time.monotonic()
    prepared = {}
    for i, (home, y) in enumerate(homes.items(), 1):
        f = features(y)
        f["home_qr"] = home_qr(y, f)
        prepared[home] = (y, f)
        print(f"  {name}: {i}/{len(homes)} homes prepared ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    fleet = len(homes) >= 5
    if fleet:
        xs, ys = [], []
        # A sample of hours, evenly spaced, so the LP stays near FLEET_ROWS rows (HiGHS takes
        # about a minute there; 160,000 rows take over ten).
        stride = max(1, -(-sum(len(y) // 2 for y, _ in prepared.values()) // FLEET_ROWS))
        for y, f in prepared.values():
            x = qr_matrix(f, over_level=True)
            usable = np.isfinite(x).all(1) & np.isfinite(y)
            rows = np.flatnonzero(usable[:len(y) // 2])[::stride]
            xs.append(x[rows])
            ys.append(y[rows] / f["level"][rows])
        shared = median_regression(np.vstack(xs), np.concatenate(ys))
    per_home = {}
    for home, (y, f) in prepared.items():
        scored = np.zeros(len(y), dtype=bool)
        scored[WARMUP_H:] = True
        if fleet:
            f["fleet_qr"] = qr_matrix(f, over_level=True) @ shared * f["level"]
            scored[:len(y) // 2] = False  # the fleet model has seen the first halves
        per_home[home] = skills(y, f, scored)
    print(f"\n{name}: hourly day-ahead skill (model MAE / better seasonal-naive MAE), per home")
    shown = [k for k in SHOWN if k in next(iter(per_home.values()))]
    print(f"{'home':>16} {'hours':>6} " + " ".join(f"{k:>15}" for k in shown))
    for home, s in per_home.items():
        print(f"{home:>16} {s['hours']:>6} " + " ".join(f"{s[k]:>15.3f}" for k in shown))
    medians = {k: statistics.median(s[k] for s in per_home.values()) for k in shown}
    print(f"{'median':>16} {'':>6} " + " ".join(f"{medians[k]:>15.3f}" for k in shown))
    return {k: round(v, 4) for k, v in medians.items()}


def load(data: Path, sgsc_homes: int) -> dict[str, dict[str, np.ndarray]]:
    sets: dict[str, dict[str, np.ndarray]] = {}
    ukdale = pl.read_parquet(data / "ukdale" / "ukdale_house2_30s.parquet").filter(~pl.col("aggregate_missing"))
    sets["UK-DALE"] = {h: hourly(g, "timestamp", pl.col("aggregate_w"), "UTC")
                       for (h,), g in ukdale.group_by("house", maintain_order=True)}
    refit = pl.read_parquet(data / "refit" / "refit_houses2_20_30s.parquet").filter(~pl.col("aggregate_missing"))
    sets["REFIT"] = {h: hourly(g, "timestamp", pl.col("aggregate_w"), "Europe/London")
                     for (h,), g in sorted(refit.group_by("house"), key=lambda kv: kv[0])}
    sgsc = pl.read_parquet(data / "sgsc" / "sgsc_55homes_30min.parquet")
    ids = sorted(sgsc["customer_id"].unique().to_list())[:sgsc_homes]
    sgsc = sgsc.filter(pl.col("customer_id").is_in(ids))
    # kWh per 30 minutes -> mean W; SGSC is AEST all year
    sets["SGSC"] = {str(h): hourly(g, "reading_datetime", pl.col("general_supply_kwh") * 2000.0, "Australia/Brisbane")
                    for (h,), g in sorted(sgsc.group_by("customer_id"), key=lambda kv: kv[0])}
    return sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--sgsc-homes", type=int, default=16, help="the first N SGSC homes by id (55: all)")
    args = parser.parse_args()
    if not (args.data / "ukdale").is_dir():
        print(f"forecast_ceiling: no shared datasets under {args.data} (--data DIR)", file=sys.stderr)
        return 2
    result = {name: evaluate(name, homes) for name, homes in load(args.data, args.sgsc_homes).items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
