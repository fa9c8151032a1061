"""Forecast: the next 24 hours with their interval, what happened so far, and how good the model
has been against the naive baselines."""

from typing import cast
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data
from ui.common import home_page, now, refusals
from ui.safe import md_escape

v, p, home, tz = home_page("Forecast")
with refusals():
    resolutions = data.forecast_resolutions(v.db, p, home)
if not resolutions:
    st.info("No forecast for this home yet: the forecaster needs some history first.")
    st.stop()
resolution = st.segmented_control("Resolution", resolutions, default=resolutions[-1],
                                  format_func=lambda r: f"{r} min", key="forecast_resolution") \
    or resolutions[-1]
with refusals():
    view = data.forecast(v.db, p, home, resolution, now())
if view is None:
    st.info("No forecast at this resolution.")
    st.stop()

age_h = (now() - view.made_at).total_seconds() / 3600
m1, m2, m3 = st.columns(3)
m1.metric("Issued", f"{view.made_at.astimezone(ZoneInfo(tz)):%H:%M}",
          f"{age_h:,.1f} h ago", delta_color="off")
m2.metric("Error so far", "—" if view.error_so_far_w is None else f"{view.error_so_far_w:,.0f} W",
          help="Mean absolute error of this forecast over the slots already measured.")
if view.scores.height:
    s = view.scores
    n = cast(int, s["n"].sum())  # an Int64 column
    model = float((s["mae_w"] * s["n"]).sum() / n) if n else None
    baseline = float((s["naive_day_mae_w"] * s["n"]).sum() / n) if n else None
    m3.metric("Recent error (all horizons)", "—" if model is None else f"{model:,.0f} W",
              None if model is None or not baseline else f"{model / baseline - 1:+.0%} vs same time yesterday",
              delta_color="inverse",
              help="Scored as actuals arrive; the baseline repeats the same slot of the day before.")
if age_h > 2:
    st.warning(f"This forecast is {age_h:,.1f} hours old: the forecaster may have stopped.")

st.plotly_chart(charts.forecast_chart(view, tz), config=charts.CONFIG, key="forecast")
st.caption(f"Model {md_escape(view.model)}; the band is the 80 % interval; red is what the meter "
           f"measured. Times in {md_escape(tz)}.")

st.subheader("Recent error by horizon")
if view.scores.height:
    st.plotly_chart(charts.forecast_errors(view.scores), config=charts.CONFIG, key="errors")
    st.dataframe(view.scores.select(
        (pl.col("horizon_min") / 60).alias("hours ahead"), "model", "n",
        pl.col("mae_w").round(0).alias("model MAE (W)"),
        pl.col("naive_day_mae_w").round(0).alias("yesterday MAE (W)"),
        pl.col("naive_week_mae_w").round(0).alias("last week MAE (W)"),
        (pl.col("coverage") * 100).round(0).alias("in interval %")), hide_index=True)
else:
    st.caption("Not scored yet.")
