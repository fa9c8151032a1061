"""Fleet (operators): every home's demand now and forecast, the biggest consumers, homes with
open anomalies, silent meters, and the pipeline's health."""

import polars as pl
import streamlit as st

from ui import charts, data
from ui.common import now, principal, refusals, viewer

v = viewer()
p = principal()
st.title("Fleet")
with refusals():
    f = data.fleet(v.db, p, now(), v.settings.stale_after_s, v.settings.silent_after_s)

homes = f.homes
m1, m2, m3, m4 = st.columns(4)
m1.metric("Demand now", f"{f.demand_w / 1000:,.1f} kW",
          help=f"Sum over homes with a reading in the last {v.settings.stale_after_s:g} s.")
m2.metric("Homes reporting", f"{homes.filter(pl.col('fresh')).height} / {homes.height}")
m3.metric("Homes with open anomalies", f"{homes.filter(pl.col('open_anomalies') > 0).height}")
m4.metric("Silent meters", f"{f.silent_meters.height}",
          help=f"Meters without a reading for {v.settings.silent_after_s / 60:g} minutes.")

st.subheader("Demand, last 24 h and forecast")
st.plotly_chart(charts.fleet_demand(f.demand, f.forecast), config=charts.CONFIG, key="demand")
if f.forecast.height:
    st.caption(f"Forecast: sum of the newest hourly forecasts of {f.forecast_homes} homes.")

st.subheader("Pipeline health")
h1, h2, h3, h4 = st.columns(4)
h1.metric("Ingest", f"{f.ingest_per_s:,.1f} readings/s", help="Readings stamped in the last 5 minutes.")
lag = None if f.newest_reading is None else (f.as_of - f.newest_reading).total_seconds()
h2.metric("Newest reading", "—" if lag is None else f"{lag:,.0f} s ago")
agg = None if f.newest_minute is None else (f.as_of - f.newest_minute).total_seconds() - 60
h3.metric("Aggregation lag", "—" if agg is None else f"{max(0.0, agg):,.0f} s",
          help="How far the newest stored home minute trails the clock (a minute is stored "
               "about two minutes after it ends).")
h4.metric("Dead letters (1 h)", f"{f.dead_letters_hour:,}")
if lag is not None and lag > v.settings.stale_after_s:
    st.warning(f"No reading for {lag / 60:,.0f} minutes: is the flow running?")
if f.dead_letter_reasons.height:
    with st.expander("Why messages were dead-lettered (last hour)"):
        st.dataframe(f.dead_letter_reasons, hide_index=True)

left, right = st.columns(2)
with left:
    st.subheader("Top consumers today")
    st.dataframe(homes.head(10).select(
        "home_id", pl.col("today_kwh").round(2).alias("kWh today"),
        pl.col("power_w").round(0).alias("W now"), "open_anomalies"), hide_index=True)
with right:
    st.subheader("Homes with open anomalies")
    if f.anomalies.is_empty():
        st.caption("None.")
    else:
        st.dataframe(f.anomalies.select("home_id", "open", pl.col("since")), hide_index=True)
    st.subheader("Silent meters")
    if f.silent_meters.is_empty():
        st.caption("None.")
    else:
        st.dataframe(f.silent_meters, hide_index=True)
