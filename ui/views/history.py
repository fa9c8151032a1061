"""History and patterns: where the energy and the money went over a chosen range."""

import io
from datetime import timedelta
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data
from ui.common import home_page, now, refusals
from ui.safe import file_part, md_escape, spreadsheet_safe

v, p, home, tz = home_page("History")

today = now().astimezone(ZoneInfo(tz)).date()
c1, c2 = st.columns([2, 1])
picked = c1.date_input("Dates", value=(today - timedelta(days=6), today), max_value=today,
                       key="history_range", format="YYYY-MM-DD")
resolution = c2.selectbox("Resolution", ["auto", *data.RESOLUTIONS], key="history_resolution",
                          help="auto: 1 min up to 2 days, 15 min up to a month, hourly up to "
                               "four months, daily beyond")
if not isinstance(picked, (tuple, list)) or len(picked) != 2:
    st.info("Pick a first and a last day.")
    st.stop()
first, last = picked
start, end = data.day_range(first, last, tz)
end = min(end, now() + timedelta(minutes=1))
with refusals():
    h = data.history(v.db, p, home, start, end,
                     None if resolution == "auto" else data.RESOLUTIONS[resolution], tz, v.pricing())
if h.note:
    st.info(h.note)
if h.bands.is_empty():
    st.info("No data for this home in this range.")
    st.stop()

cur = h.currency
m1, m2, m3, m4 = st.columns(4)
delta_kwh = None if not h.prev_total_kwh else f"{(h.total_kwh / h.prev_total_kwh - 1):+.0%} vs previous"
m1.metric("Energy", f"{h.total_kwh:,.1f} kWh", delta_kwh, delta_color="inverse")
m2.metric("Cost", f"{h.total_cost:,.2f} {md_escape(cur)}",
          None if not h.prev_total_cost else f"{h.total_cost - h.prev_total_cost:+,.2f} {md_escape(cur)}",
          delta_color="inverse")
m3.metric("Base load", "—" if h.base_load_w is None else f"{h.base_load_w:,.0f} W",
          help="Always-on consumption: the 5th percentile of the home's hourly mean power "
               "(hours with at least 45 minutes of data); needs a day of data.")
m4.metric("Base load per year",
          "—" if h.base_load_cost_per_year is None
          else f"{h.base_load_cost_per_year:,.0f} {md_escape(cur)}",
          help="Base load running all year at the average price.")
st.caption(f"Resolution {[k for k, s in data.RESOLUTIONS.items() if s == h.step_s][0]}; times in "
           f"{md_escape(tz)}; prices: {md_escape(h.pricing_source)}. 'unmetered' is the meter's total "
           "minus its sub-metered devices.")

st.subheader("Usage by device")
st.plotly_chart(charts.stacked_usage(h.bands, tz), config=charts.CONFIG, key="stacked")

left, right = st.columns(2)
with left:
    st.subheader("Cost by device")
    st.plotly_chart(charts.cost_by_device(h.totals, cur), config=charts.CONFIG, key="cost")
with right:
    st.subheader("This period against the previous one")
    st.plotly_chart(charts.period_comparison(h.totals), config=charts.CONFIG, key="compare")

st.subheader("Top consumers")
st.dataframe(h.totals.select(
    "device_id", pl.col("kwh").round(2).alias("kWh"), pl.col("cost").round(2).alias(cur),
    (pl.col("share") * 100).round(1).alias("% of energy"),
    pl.col("prev_kwh").round(2).alias("kWh before"),
    (pl.col("change") * 100).round(0).alias("change %")), hide_index=True)

left, right = st.columns(2)
with left:
    st.subheader("Daily profile")
    st.plotly_chart(charts.daily_heatmap(h.daily_profile), config=charts.CONFIG, key="daily")
with right:
    st.subheader("Weekly profile")
    st.plotly_chart(charts.weekly_heatmap(h.weekly_profile), config=charts.CONFIG, key="weekly")

export = h.bands.select("device_id", "kind", pl.col("bucket").alias("bucket_utc"),
                        (pl.col("wh") / 1000).alias("kwh"), "cost", "minutes")
name = f"shems_{file_part(home)}_{first}_{last}"


def _parquet() -> bytes:
    buffer = io.BytesIO()
    export.write_parquet(buffer)
    return buffer.getvalue()


d1, d2 = st.columns(2)
# A spreadsheet opens the CSV: device ids that look like formulas must stay text. The Parquet file
# keeps the values as stored (typed columns; no spreadsheet evaluates it).
d1.download_button("Download CSV", data=lambda: spreadsheet_safe(export).write_csv(),
                   file_name=f"{name}.csv",
                   mime="text/csv", key="csv")
d2.download_button("Download Parquet", data=_parquet, file_name=f"{name}.parquet",
                   mime="application/vnd.apache.parquet", key="parquet")
