"""Energy flow: where the home's energy came from (grid, solar, battery) and went (home, EV,
battery, export) over a day, week, month or year, as one Sankey with self-consumption and
self-sufficiency."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import streamlit as st

from pipeline.energy.flow import BATTERY, EV, GRID, SOLAR, energy_flow, has_flow_devices
from ui import charts, data, energy
from ui.common import home_page, now, refusals
from ui.safe import md_escape

v, p, home, tz = home_page("Energy flow")
with refusals():
    newest = energy.newest_minute(v.db, p, home)
    kinds = data.devices_now(v.db, p, home)["kind"].to_list()
if newest is None:
    st.info("No readings from this home yet.")
    st.stop()
as_of = min(newest, now())
zone = ZoneInfo(tz)
c1, c2 = st.columns([2, 1])
period = c1.radio("Period", energy.PERIODS, index=0, horizontal=True, key="flow_period")
day = c2.date_input("Including", value=(as_of - timedelta(microseconds=1)).astimezone(zone).date(),
                    key="flow_day", format="YYYY-MM-DD",
                    help="Opens on the day of this home's newest reading.")
start, end = energy.period_range(str(period), day, tz)
end = min(end, as_of)
if end <= start:
    st.info("No data in this period: it starts after this home's newest reading.")
    st.stop()
# Minutes keep apart what happened within an hour (export at noon, import at 12:40); a year of
# minutes is too much to fetch for one page, so longer periods use the hourly rollup.
step_s = 60 if end - start <= timedelta(days=31) else 3600
with refusals():
    usage = energy.flow_usage(v.db, p, home, start, end, step_s)
if usage.is_empty():
    st.info("No data for this home in this period.")
    st.stop()
# a home with a meter keeps its grid from the meter even when the meter was silent all period
# (those minutes are left out and counted), never the sum of its other devices
flow = energy_flow(usage, has_meter="meter" in kinds)
if not has_flow_devices(kinds):
    st.info("This home has no solar panels, battery or EV metered: all its energy comes from the grid.")

kwh = 1e6
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Grid import", f"{flow.sources[GRID] / kwh:,.1f} kWh")
m2.metric("Solar", f"{flow.sources[SOLAR] / kwh:,.1f} kWh")
m3.metric("Export", f"{flow.sinks[GRID] / kwh:,.1f} kWh")
m4.metric("Self-consumption", "—" if flow.self_consumption is None else f"{flow.self_consumption:.0%}",
          help="Share of the solar energy used in the home, the EV or the battery rather than exported.")
m5.metric("Self-sufficiency", "—" if flow.self_sufficiency is None else f"{flow.self_sufficiency:.0%}",
          help="Share of the home's and EV's use not taken from the grid.")
st.plotly_chart(energy.sankey(flow), config=charts.CONFIG, key="flow_sankey")
parts = [f"{start.astimezone(zone):%Y-%m-%d %H:%M} to {end.astimezone(zone):%Y-%m-%d %H:%M} ({md_escape(tz)})",
         "per minute" if step_s == 60 else "per hour (what happened within an hour is netted)"]
if flow.sinks[BATTERY] or flow.sources[BATTERY] or flow.sinks[EV]:
    parts.append("battery and EV as their meters measured them")
st.caption("; ".join(parts) + ".")
if flow.left_out_buckets:
    share = flow.left_out_buckets / (flow.buckets + flow.left_out_buckets)
    unit = "minute" if step_s == 60 else "hour"
    st.caption(f"{flow.left_out_buckets:,} {unit}{'s' if flow.left_out_buckets != 1 else ''} ({share:.1%}) "
               "left out: the readings did not add up (the meter sent more to the grid than solar and "
               "battery gave) or the meter had no reading.")
with st.expander("The numbers"):
    st.dataframe(energy.flow_table(flow), hide_index=True, key="flow_links")
