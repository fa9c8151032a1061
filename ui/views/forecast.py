"""Forecast: the next 24 hours with their likely range and what happened so far. The homeowner
reads plain words; the operator also sees the model, its errors and the naive baselines."""

from typing import cast
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data, fmt
from ui.common import data_clock, home_page, now, refusals, show_data_age, user_locale
from ui.safe import md_escape

v, p, home, tz = home_page("Forecast")
loc = user_locale(v)
operator = p.sees_fleet
clock = data_clock(v, p, home)
show_data_age(clock, tz, loc)
with refusals():
    resolutions = data.forecast_resolutions(v.db, p, home)
if not resolutions:
    st.info("No forecast for this home yet: the forecaster needs some history first.")
    st.stop()
if operator:
    resolution = st.segmented_control("Resolution", resolutions, default=resolutions[-1],
                                      format_func=lambda r: f"{r} min", key="forecast_resolution") \
        or resolutions[-1]
else:
    resolution = resolutions[-1]
with refusals():
    view = data.forecast(v.db, p, home, resolution, clock.as_of)
if view is None:
    st.info("No forecast at this resolution.")
    st.stop()

# How old the forecast is against the data it came from (an imported history's forecast is
# "fresh" at its own last day), and against the wall clock for the words.
behind = clock.as_of - view.made_at
m1, m2, m3 = st.columns(3)
m1.metric("Made", f"{view.made_at.astimezone(ZoneInfo(tz)):%d %b %H:%M}",
          fmt.ago(view.made_at, now(), loc), delta_color="off", delta_arrow="off")
m2.metric("Error so far" if operator else "Off by so far",
          fmt.NONE if view.error_so_far_w is None else f"{fmt.number(view.error_so_far_w, loc, 0)} W",
          help="Mean absolute error of this forecast over the slots already measured." if operator
          else "How far the forecast has been from what your meter measured since it was made.")
model = baseline = None
if view.scores.height:
    s = view.scores
    n = cast(int, s["n"].sum())  # an Int64 column
    model = float((s["mae_w"] * s["n"]).sum() / n) if n else None
    baseline = float((s["naive_day_mae_w"] * s["n"]).sum() / n) if n else None
if operator:
    m3.metric("Recent error (all horizons)", fmt.NONE if model is None else f"{model:,.0f} W",
              None if model is None or not baseline else f"{model / baseline - 1:+.0%} vs same time yesterday",
              delta_color="inverse",
              help="Scored as actuals arrive; the baseline repeats the same slot of the day before.")
elif model is not None and baseline:
    better = model < baseline
    m3.metric("Against a simple guess", "Better" if better else "Not yet better",
              help="The simple guess: the same use as yesterday at the same time.")
if behind.total_seconds() > 2 * 3600:
    st.warning(f"This forecast was made {fmt.duration(behind, loc)} before the newest data: "
               "the forecaster may have stopped.")

st.plotly_chart(charts.forecast_chart(view, tz, model_details=operator), config=charts.CONFIG,
                key="forecast")
if operator:
    st.caption(f"Model {md_escape(view.model)}; the band is the 80 % interval; red is what the meter "
               f"measured. Times in {md_escape(tz)}.")
else:
    st.caption("Blue: the use we expect, hour by hour; the shaded band is where it will be 8 times "
               f"in 10. Red: what your meter measured. Times in {md_escape(tz)}.")

if not operator:
    st.stop()
st.subheader("Recent error by horizon")
if view.scores.height:
    st.plotly_chart(charts.forecast_errors(view.scores), config=charts.CONFIG, key="errors")
    st.dataframe(view.scores.select(
        (pl.col("horizon_min") / 60).alias("Hours ahead"), pl.col("model").alias("Model"),
        pl.col("n").alias("Scored"),
        pl.col("mae_w").round(0).alias("Model MAE (W)"),
        pl.col("naive_day_mae_w").round(0).alias("Yesterday MAE (W)"),
        pl.col("naive_week_mae_w").round(0).alias("Last week MAE (W)"),
        (pl.col("coverage") * 100).round(0).alias("In interval (%)")), hide_index=True)
else:
    st.caption("Not scored yet.")
