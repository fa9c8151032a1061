"""History and patterns: where the energy and the money went over a chosen range."""

import io
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data, fmt
from ui.common import data_clock, home_page, now, refusals, show_data_age, user_locale
from ui.safe import file_part, md_escape, spreadsheet_safe

v, p, home, tz = home_page("History")
loc = user_locale(v)
clock = data_clock(v, p, home)
show_data_age(clock, tz, loc)

# The range opens on the home's newest week (an imported history's, not an empty "this week");
# any day back to 2000 can be picked.
today = clock.as_of.astimezone(ZoneInfo(tz)).date()
latest = max(today, now().astimezone(ZoneInfo(tz)).date())
range_key = f"history_range_{home}"
# One click for the usual periods, ending on the home's newest day (calendar week, month, year).
PERIODS = {"Day": lambda d: d, "Week": lambda d: d - timedelta(days=d.weekday()),
           "Month": lambda d: d.replace(day=1), "Year": lambda d: d.replace(month=1, day=1)}


def _period() -> None:
    chosen = st.session_state.get(f"history_period_{home}")
    if chosen in PERIODS:
        st.session_state[range_key] = (PERIODS[chosen](today), today)


st.segmented_control("Period", list(PERIODS), key=f"history_period_{home}", on_change=_period,
                     help="Up to the newest day with data; or pick any dates below.")
c1, c2 = st.columns([2, 1])
# The range lives in the session (a period sets it); a value= beside it would make Streamlit warn.
if range_key not in st.session_state:
    st.session_state[range_key] = (today - timedelta(days=6), today)
picked: object = c1.date_input("Dates", min_value=date(2000, 1, 1), max_value=latest, key=range_key,
                               format="YYYY-MM-DD")
resolution = c2.selectbox("Resolution", ["auto", *data.RESOLUTIONS], key="history_resolution",
                          help="auto: 1 min up to 2 days, 15 min up to a month, hourly up to "
                               "four months, daily beyond")
if not isinstance(picked, (tuple, list)) or len(picked) != 2:
    st.info("Pick a first and a last day.")
    st.stop()
first, last = picked
start, days_end = data.day_range(first, last, tz)
end = min(days_end, now() + timedelta(minutes=1))
with refusals():
    h = data.history(v.db, p, home, start, end,
                     None if resolution == "auto" else data.RESOLUTIONS[resolution], tz, v.pricing(),
                     period=days_end - start)
if h.note:
    st.info(h.note)
if h.bands.is_empty():
    newest = clock.newest
    st.info("No data for this home in this range."
            + (f" Its newest reading is from {newest.astimezone(ZoneInfo(tz)):%Y-%m-%d} "
               f"({fmt.ago(newest, now(), loc)})." if newest else ""))
    st.stop()

cur = h.currency
# "vs previous" only over the quarter-hours both periods have data for, and only when that is
# a fair share of this period (a week with one day of data is no comparison).
FAIR = 0.5
comparable = h.common_coverage >= FAIR * h.coverage and h.prev_common_kwh > 0
m1, m2, m3, m4 = st.columns(4)
delta_kwh = (f"{(h.common_kwh / h.prev_common_kwh - 1):+.0%} vs previous" if comparable else None)
m1.metric("Energy", f"{fmt.number(h.total_kwh, loc)} kWh", delta_kwh, delta_color="inverse")
delta_cost = h.common_cost - h.prev_common_cost
# An ASCII sign: Streamlit colours and points the arrow by a leading "-", and a typographic
# minus showed a cost drop as a red rising arrow.
m2.metric("Cost", fmt.money(h.total_cost, cur, loc),
          (("+" if delta_cost >= 0 else "-") + fmt.money(abs(delta_cost), cur, loc)) if comparable else None,
          delta_color="inverse")
m3.metric("Base load", fmt.NONE if h.base_load_w is None else f"{fmt.number(h.base_load_w, loc, 0)} W",
          help="Always-on consumption: the 5th percentile of the home's hourly mean power "
               "(hours with at least 45 minutes of data); needs a day of data.")
m4.metric("Base load per year",
          fmt.money(h.base_load_cost_per_year, cur, loc, digits=0),
          help="Base load running all year at the average price.")
coverage = (f"This period has data for {h.coverage:.0%} of its time, the previous one for "
            f"{h.prev_coverage:.0%}; ")
if comparable:
    coverage += f"the comparison covers the {h.common_coverage:.0%} of the time both have data for."
else:
    coverage += "too little overlaps for a fair comparison, so none is shown."
st.caption(coverage)
st.caption(f"Resolution {[k for k, s in data.RESOLUTIONS.items() if s == h.step_s][0]}; times in "
           f"{md_escape(tz)}; prices: {md_escape(h.pricing_source)}. 'unmetered' is the meter's total "
           "minus its sub-metered devices.")

st.subheader("Usage by device")
st.plotly_chart(charts.stacked_usage(h.bands, tz), config=charts.CONFIG, key="stacked")

left, right = st.columns(2)
with left:
    st.subheader("Cost by device")
    if h.totals.filter(pl.col("cost") != 0).height:
        st.plotly_chart(charts.cost_by_device(h.totals, cur), config=charts.CONFIG, key="cost")
    else:
        st.caption("No cost in this range.")
with right:
    st.subheader("This period against the previous one")
    if comparable:
        st.plotly_chart(charts.period_comparison(h.totals), config=charts.CONFIG, key="compare")
        st.caption(f"Over the {h.common_coverage:.0%} of the time both periods have data for.")
    else:
        st.caption(f"No comparison: the previous period has data for {h.prev_coverage:.0%} of its "
                   f"time, and both together for {h.common_coverage:.0%}.")

st.subheader("Top consumers")


def _text(value: float | None, pattern: str) -> str:
    return fmt.NONE if value is None else pattern.format(value)


top = h.totals.select(
    pl.col("device_id").map_elements(fmt.label, return_dtype=pl.Utf8).alias("Device"),
    pl.col("kwh").round(2).alias("Energy (kWh)"),
    pl.col("cost").map_elements(lambda c: fmt.money(c, cur, loc), return_dtype=pl.Utf8).alias("Cost"),
    (pl.col("share") * 100).round(1).alias("Share of energy (%)"),
    pl.col("common_kwh").round(2).alias("Compared (kWh)"),
    pl.col("prev_common_kwh").round(2).alias("Previous period (kWh)"),
    pl.col("change").map_elements(lambda c: _text(c, "{:+.0%}"), return_dtype=pl.Utf8,
                                  skip_nulls=False).alias("Change"))
if not comparable:
    top = top.drop("Compared (kWh)", "Previous period (kWh)", "Change")
elif top["Compared (kWh)"].equals(top["Energy (kWh)"]):
    # Both periods have data throughout: the compared energy is the energy, a column said twice.
    top = top.drop("Compared (kWh)")
st.dataframe(top, hide_index=True)


def _profile(title: str, profile: pl.DataFrame, heatmap: Callable[[pl.DataFrame], Any], key: str) -> None:
    st.subheader(title)
    if profile.height:
        st.plotly_chart(heatmap(profile), config=charts.CONFIG, key=key)
    else:
        st.caption("No whole hour with data in this range.")


left, right = st.columns(2)
with left:
    _profile("Daily profile", h.daily_profile, charts.daily_heatmap, "daily")
with right:
    _profile("Weekly profile", h.weekly_profile, charts.weekly_heatmap, "weekly")

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
