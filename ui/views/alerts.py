"""Alerts and recommendations: what looks wrong, and what would save money."""

from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import data
from ui.auth import AccessDenied
from ui.common import home_page, now, refusals
from ui.safe import md_escape

v, p, home, tz = home_page("Alerts")
with refusals():
    found = data.anomalies(v.db, p, home, now())
    recs = data.recommendations(v.db, p, home)

zone = ZoneInfo(tz)
open_ = found.filter(pl.col("open"))
st.subheader(f"Open anomalies ({open_.height})")
if open_.is_empty():
    st.success("Nothing unusual right now.")
for row in open_.iter_rows(named=True):
    where = md_escape(row["device_id"]) if row["device_id"] else "whole home"
    st.warning(f"**{where}** · {md_escape(row['kind'].replace('_', ' '))} since "
               f"{row['started_at'].astimezone(zone):%a %d %b %H:%M}\n\n{md_escape(row['message'])}")
closed = found.filter(~pl.col("open"))
if closed.height:
    with st.expander(f"Closed in the last 7 days ({closed.height})"):
        st.dataframe(closed.select(
            "device_id", "kind", pl.col("started_at").dt.convert_time_zone(tz),
            pl.col("ended_at").dt.convert_time_zone(tz), "message"), hide_index=True)

st.subheader("Recommendations")
if recs.is_empty():
    st.info("No recommendation yet.")
can_decide = p.owns(home)
if recs.height and not can_decide:
    st.caption("Only the household decides on its recommendations.")
for i, row in enumerate(recs.iter_rows(named=True)):
    with st.container(border=True):
        saving = (f"≈ {row['money_per_month']:,.2f} {md_escape(row['currency'])} / month · "
                  f"{row['kwh_per_month']:,.1f} kWh / month")
        st.markdown(f"**{md_escape(row['title'])}**  \n{saving}")
        st.caption(md_escape(row["detail"]))
        status = row["status"]
        if status != "new":
            when = row["status_changed_at"]
            st.caption(f"{md_escape(status.capitalize())} by {md_escape(row['status_changed_by'])}"
                       + (f" on {when.astimezone(zone):%d %b %H:%M}" if when else ""))
        if can_decide:
            a, b, _ = st.columns([1, 1, 3])
            choice = None
            if a.button("Accept", key=f"accept_{i}", disabled=status == "accepted"):
                choice = "accepted"
            if b.button("Dismiss", key=f"dismiss_{i}", disabled=status == "dismissed"):
                choice = "dismissed"
            if choice:
                try:
                    data.decide_recommendation(v.db, v.accounts, p, home, row["kind"],
                                               row["device_id"], choice)
                except AccessDenied as exc:
                    st.error(md_escape(exc))
                else:
                    st.rerun()
