"""``shems evaluate`` output: rich tables for people, one JSON line for programs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from pipeline.evaluation.forecast import DAY_AHEAD_H, ForecastEvalRow, ForecastEvaluation

SKILL_TARGET = 0.72  # issue 14: hourly day-ahead skill on every shared dataset


def _num(x: float, digits: int = 1) -> str:
    return "—" if not math.isfinite(x) else f"{x:,.{digits}f}"


def forecast_table(rows: list[ForecastEvalRow], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for name in ("home", "res", "horizon", "n", "MAE W", "RMSE W", "MAPE %", "day MAE", "week MAE",
                 "skill", "cov 80", "issued by"):
        table.add_column(name, justify="left" if name in ("home", "issued by") else "right")
    for r in rows:
        skill = _num(r.skill, 3)
        if r.resolution == 60 and r.horizon_h == DAY_AHEAD_H:
            skill = f"[{'green' if r.skill <= SKILL_TARGET else 'red'}]{skill}[/]"
        table.add_row(r.home_id, f"{r.resolution} min", f"{r.horizon_h:g} h", f"{r.n:,}", _num(r.mae),
                      _num(r.rmse), _num(r.mape), _num(r.naive_day_mae), _num(r.naive_week_mae), skill,
                      _num(r.coverage_80, 3), f"{r.model} ({r.model_share:.0%})")
    return table


def print_evaluation(result: ForecastEvaluation, console: Console, seconds: float) -> None:
    console.print(forecast_table(result.rows, "Forecasts, scored prequentially"))
    summary = result.summary()
    if summary:
        console.print(forecast_table(summary, "Median over homes"))
    homes = Table(title="Per home")
    for name in ("home", "model bytes", "minutes", "stuck runs", "hours not scored (stuck)",
                 "chosen at the end, per resolution:horizon band"):
        homes.add_column(name, justify="left" if name in ("home", "chosen at the end, per resolution:horizon band") else "right")
    for h in result.homes:
        homes.add_row(h.home_id, f"{h.model_bytes:,}", f"{h.minutes:,}", str(h.stuck_runs),
                      f"{h.excluded_slots:,}", " ".join(h.winners))
    console.print(homes)
    day_ahead = [r for r in (summary or result.rows) if r.resolution == 60 and r.horizon_h == DAY_AHEAD_H]
    for r in day_ahead:
        console.print(f"day-ahead (hourly, horizon {DAY_AHEAD_H} h) {r.home_id}: skill {r.skill:.3f} "
                      f"(target <= {SKILL_TARGET}), 80 % interval coverage {r.coverage_80:.3f}")
    if result.homes:
        console.print(f"model state: max {max(h.model_bytes for h in result.homes):,} bytes per home; "
                      f"evaluated in {seconds:,.1f} s")
    console.print("Horizon = issue to the END of the target slot; skill = model MAE / the better "
                  "seasonal-naive MAE; MAPE leaves out actuals under 10 % of the home's mean; "
                  "slots touched by stuck runs of one value and filled rows are not scored.")


def print_anomaly_evaluation(result, console: Console) -> None:
    """``result``: a ``pipeline.evaluation.anomaly.Evaluation``."""
    from pipeline.evaluation.anomaly import anomaly_table

    console.print(anomaly_table(result, f"Anomalies: faults injected into the real series "
                                        f"({result.homes} home(s), {result.seconds:,.0f} s)"))
    console.print("A detection overlapping a real fault (data hole, stuck logger, two hours or more far "
                  "above the usual high before injection) or another kind's "
                  f"injected fault is excluded, not a false positive; {result.glitches} one-sample "
                  "counter glitches were written as traps that must not alert.")


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def evaluation_json(result: ForecastEvaluation, anomaly: list) -> str:
    def row(r: ForecastEvalRow) -> dict:
        return {k: _clean(v) for k, v in asdict(r).items()}

    return json.dumps({
        "forecast": [row(r) for r in result.rows],
        "anomaly": anomaly,
        "model_bytes_per_home": {h.home_id: h.model_bytes for h in result.homes},
        "forecast_median": [row(r) for r in result.summary()],
    })
