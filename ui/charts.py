"""Plotly figures for the pages: pure functions from frames to figures, laid out to stay readable
on a phone (legend below the plot, small margins, no fixed width).

Plotly renders a subset of HTML (links among it) in trace names, category ticks and hover text,
so every device id, model name or currency goes through ``plot_escape`` on its way in."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas  # type: ignore[import-untyped]  # noqa: F401 - see below
import plotly.graph_objects as go
import polars as pl

from ui.data import UNMETERED, ForecastView
from ui.fmt import currency_symbol, label
from ui.safe import plot_escape, plot_labels

# pandas is imported above, once, under the import lock: plotly looks pandas up in sys.modules
# without importing it, and two sessions drawing their first charts at once (one thread each)
# then saw a half-imported pandas ("partially initialized module 'pandas' has no attribute
# 'Series'"): the History page failed in a browser test with two users.

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
UNMETERED_COLOUR = "#9aa0a6"
# What st.plotly_chart gets as its config: no logo, responsive resizing, touch-friendly.
CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
          "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def _layout(fig: go.Figure, *, height: int = 360, y_title: str = "", x_title: str = "") -> go.Figure:
    fig.update_layout(
        height=height, margin=dict(l=8, r=8, t=32, b=8),
        legend=dict(orientation="h", yanchor="top", y=-0.15, xanchor="left", x=0),
        hovermode="x unified", font=dict(size=12),
    )
    if x_title:  # the legend goes below the axis title, not over it
        fig.update_layout(legend=dict(y=-0.3))
    fig.update_yaxes(title_text=y_title, automargin=True)
    fig.update_xaxes(title_text=x_title, automargin=True)
    return fig


def _template_text(text: str) -> str:
    """Literal text inside a hovertemplate: escaped, and with Plotly's ``%{...}`` made inert."""
    return plot_escape(text).replace("{", "&#123;").replace("}", "&#125;")


def _local(col: pl.Series, tz: str) -> list:
    return col.dt.convert_time_zone(tz).to_list()


def with_gaps(frame: pl.DataFrame, x: str, step_s: float, *values: str) -> pl.DataFrame:
    """The rows with null rows inserted wherever two points are more than twice ``step_s``
    apart (one a step after the last point, one a step before the next), so Plotly breaks a line,
    and a stack drops to nothing, instead of drawing a straight ramp across a day without data."""
    if frame.height < 2:
        return frame
    rows = frame.sort(x)
    gap = rows[x].diff().dt.total_seconds() > 2 * step_s
    if not gap.any():
        return rows
    nulls = [pl.lit(None, rows.schema[v]).alias(v) for v in values]
    after = rows.filter(gap.shift(-1, fill_value=False)).select(pl.col(x) + pl.duration(seconds=step_s), *nulls)
    before = rows.filter(gap).select(pl.col(x) - pl.duration(seconds=step_s), *nulls)
    keep = [x, *values]
    return pl.concat([rows.select(keep), after, before], how="vertical").sort(x)


def _step_s(col: pl.Series) -> float:
    """The usual spacing of a time column (its median step), in seconds."""
    if col.len() < 2:
        return 60.0
    step = col.sort().diff().dt.total_seconds().median()
    return float(step) if isinstance(step, (int, float)) and step > 0 else 60.0


HOURS = [f"{h:02d}:00" for h in range(24)]


def stacked_usage(bands: pl.DataFrame, tz: str) -> go.Figure:
    """kWh per bucket, one stacked band per device plus the unmetered remainder; PV generation
    (negative) as its own area below zero."""
    fig = go.Figure()
    totals = (bands.group_by("device_id").agg(pl.col("wh").sum()).sort("wh", descending=True))
    order = [d for d in totals["device_id"].to_list() if d != UNMETERED] + (
        [UNMETERED] if UNMETERED in totals["device_id"].to_list() else [])
    step = _step_s(bands["bucket"].unique())
    for device in order:
        own = bands.filter(pl.col("device_id") == device)
        kind = own["kind"][0]
        rows = with_gaps(own, "bucket", step, "wh")
        negative = kind == "pv"
        fig.add_trace(go.Scatter(
            x=_local(rows["bucket"], tz), y=(rows["wh"] / 1000).to_list(), name=plot_escape(label(device)),
            mode="lines", line=dict(width=0.5, color=UNMETERED_COLOUR if device == UNMETERED else None),
            stackgroup="generation" if negative else "usage",
            hovertemplate="%{y:.3f} kWh", connectgaps=False,
        ))
    buckets = bands["bucket"].unique()
    if buckets.len() == 1:
        # One interval is a line of no length: drawn as points on an axis an interval either
        # side, not on an axis of a millisecond ("07:59:59.999 ... 08:00:00.0005").
        fig.update_traces(mode="lines+markers")
        at = _local(buckets, tz)[0]
        fig.update_xaxes(range=[at - timedelta(seconds=step), at + timedelta(seconds=step)])
    return _layout(fig, y_title="kWh per interval")


def cost_by_device(totals: pl.DataFrame, currency: str) -> go.Figure:
    rows = totals.sort("cost")
    fig = go.Figure(go.Bar(x=rows["cost"].to_list(), y=plot_labels([label(d) for d in rows["device_id"]]),
                           orientation="h",
                           marker_color=[UNMETERED_COLOUR if d == UNMETERED else "#1f77b4"
                                         for d in rows["device_id"].to_list()],
                           hovertemplate="%{x:.2f} " + _template_text(currency) + "<extra></extra>"))
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=max(220, 40 * rows.height + 80), x_title=plot_escape(currency_symbol(currency)))


def period_comparison(totals: pl.DataFrame) -> go.Figure:
    """Both periods over the time both have data for (``common_kwh``), device by device."""
    rows = totals.sort("common_kwh", descending=True)
    devices = plot_labels([label(d) for d in rows["device_id"]])
    fig = go.Figure([
        go.Bar(name="this period", x=devices, y=rows["common_kwh"].to_list(),
               hovertemplate="%{y:.2f} kWh"),
        go.Bar(name="previous period", x=devices, y=rows["prev_common_kwh"].to_list(),
               hovertemplate="%{y:.2f} kWh"),
    ])
    fig.update_layout(barmode="group")
    return _layout(fig, y_title="kWh")


def daily_heatmap(profile: pl.DataFrame) -> go.Figure:
    """Mean power by local hour (x) and day (y)."""
    wide = (profile.pivot(on="hour", index="day", values="mean_w", aggregate_function="mean")
            .sort("day"))
    hours = sorted(int(h) for h in wide.columns if h != "day")
    z: np.ndarray | list[list[float]] = wide.select([str(h) for h in hours]).to_numpy() if hours else [[]]
    fig = go.Figure(go.Heatmap(x=[HOURS[h] for h in hours], y=[str(d) for d in wide["day"].to_list()],
                               z=z, colorscale="YlOrRd", colorbar=dict(title="W"),
                               hovertemplate="%{y} %{x} — %{z:.0f} W<extra></extra>"))
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return _layout(fig, height=max(260, min(900, 14 * wide.height + 120)), x_title="hour of day")


def weekly_heatmap(profile: pl.DataFrame) -> go.Figure:
    """Mean power by local hour (x) and weekday (y): the household's week."""
    grid = pl.DataFrame({"weekday": list(range(1, 8))}).join(
        pl.DataFrame({"hour": list(range(24))}), how="cross").with_columns(
        pl.col("weekday").cast(pl.Int8), pl.col("hour").cast(pl.Int8))
    full = grid.join(profile.with_columns(pl.col("weekday").cast(pl.Int8), pl.col("hour").cast(pl.Int8)),
                     on=["weekday", "hour"], how="left").sort("weekday", "hour")
    z = full["mean_w"].to_numpy().reshape(7, 24)
    fig = go.Figure(go.Heatmap(x=HOURS, y=WEEKDAYS, z=z, colorscale="YlOrRd",
                               colorbar=dict(title="W"),
                               hovertemplate="%{y} %{x} — %{z:.0f} W<extra></extra>"))
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(type="category")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=300, x_title="hour of day")


def recent_power(recent: pl.DataFrame, tz: str) -> go.Figure:
    rows = with_gaps(recent, "bucket", 60, "mean_power_w")
    fig = go.Figure(go.Scatter(x=_local(rows["bucket"], tz), y=rows["mean_power_w"].to_list(),
                               mode="lines", name="home", fill="tozeroy", connectgaps=False,
                               hovertemplate="%{y:.0f} W"))
    return _layout(fig, height=260, y_title="W (1-minute mean)")


def device_power(devices: pl.DataFrame) -> go.Figure:
    rows = devices.filter(pl.col("power_w").is_not_null() & (pl.col("kind") != "meter")).sort("power_w")
    fig = go.Figure(go.Bar(x=rows["power_w"].to_list(), y=plot_labels([label(d) for d in rows["device_id"]]),
                           orientation="h", hovertemplate="%{x:.0f} W<extra></extra>"))
    fig.update_layout(hovermode="closest")
    return _layout(fig, height=max(200, 36 * rows.height + 80), x_title="W now")


def forecast_chart(view: ForecastView, tz: str, *, model_details: bool = True) -> go.Figure:
    """The forecast, its 80 % band and what the meter measured; ``model_details`` names the
    model in the legend (the operator's view), else the homeowner reads plain words."""
    f = view.forecast
    actual = with_gaps(view.actual, "bucket", view.resolution_min * 60, "mean_w")
    x = _local(f["target_ts"], tz)
    fig = go.Figure([
        go.Scatter(x=x, y=f["upper_w"].to_list(), mode="lines", line=dict(width=0),
                   showlegend=False, hoverinfo="skip"),
        go.Scatter(x=x, y=f["lower_w"].to_list(), mode="lines", line=dict(width=0), fill="tonexty",
                   fillcolor="rgba(31,119,180,0.2)",
                   name="80 % interval" if model_details else "likely range", hoverinfo="skip"),
        go.Scatter(x=x, y=f["yhat_w"].to_list(), mode="lines",
                   name=f"forecast ({plot_escape(view.model)})" if model_details else "expected use",
                   line=dict(color="#1f77b4"), hovertemplate="%{y:.0f} W"),
        go.Scatter(x=_local(actual["bucket"], tz), y=actual["mean_w"].to_list(),
                   mode="lines", name="actual" if model_details else "measured",
                   line=dict(color="#d62728"), connectgaps=False, hovertemplate="%{y:.0f} W"),
    ])
    fig.add_vline(x=_local(pl.Series([view.made_at]), tz)[0], line_dash="dot", line_color="gray")
    return _layout(fig, y_title=f"W ({view.resolution_min}-minute mean)" if model_details
                   else "power (W)")


def forecast_errors(scores: pl.DataFrame) -> go.Figure:
    x = (scores["horizon_min"] / 60).to_list()
    fig = go.Figure([
        go.Scatter(x=x, y=scores["mae_w"].to_list(), name="model", mode="lines+markers"),
        go.Scatter(x=x, y=scores["naive_day_mae_w"].to_list(), name="same time yesterday",
                   mode="lines", line=dict(dash="dash")),
        go.Scatter(x=x, y=scores["naive_week_mae_w"].to_list(), name="same time last week",
                   mode="lines", line=dict(dash="dot")),
    ])
    return _layout(fig, height=300, y_title="mean absolute error (W)", x_title="hours ahead")


def fleet_demand(demand: pl.DataFrame, forecast: pl.DataFrame) -> go.Figure:
    traces = [go.Scatter(x=demand["bucket"].to_list(), y=(demand["power_w"] / 1000).to_list(),
                         mode="lines", name="demand", hovertemplate="%{y:.1f} kW")]
    if forecast.height:
        x = forecast["target_ts"].to_list()
        traces += [
            go.Scatter(x=x, y=(forecast["upper_w"] / 1000).to_list(), mode="lines",
                       line=dict(width=0), showlegend=False, hoverinfo="skip"),
            go.Scatter(x=x, y=(forecast["lower_w"] / 1000).to_list(), mode="lines",
                       line=dict(width=0), fill="tonexty", fillcolor="rgba(255,127,14,0.2)",
                       name="interval (sum of homes')", hoverinfo="skip"),
            go.Scatter(x=x, y=(forecast["yhat_w"] / 1000).to_list(), mode="lines",
                       name="forecast", line=dict(color="#ff7f0e"), hovertemplate="%{y:.1f} kW"),
        ]
    return _layout(go.Figure(traces), y_title="kW (UTC)")


def plan_vs_actual(slots: list, device: str, tz: str) -> go.Figure:
    """A plan's power per slot for one device (or "grid", the meter) against what was measured."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    x = [s.start.astimezone(zone) for s in slots]
    if device == "grid":
        planned = [s.planned_grid_w for s in slots]
        measured = [s.measured_grid_w for s in slots]
    else:
        planned = [s.planned[device] for s in slots]
        measured = [s.measured[device] for s in slots]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=planned, name="planned", line_shape="hv"))
    fig.add_trace(go.Scatter(x=x, y=measured, name="measured", line_shape="hv", mode="lines+markers"))
    fig.update_layout(title=plot_escape(device))
    return _layout(fig, height=260, y_title="W")
