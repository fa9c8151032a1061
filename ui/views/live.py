"""Live: the home's power now, per device, and today's energy and cost, refreshed in place."""

from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data
from ui.common import current_principal, home_page, now, refusals
from ui.safe import md_escape

v, p, home, tz = home_page("Live")


@st.fragment(run_every=v.settings.live_refresh_s)
def live_panel() -> None:
    # An auto-refresh is not activity: check the session without extending it.
    who = current_principal(v, touch=False)
    if who is None:
        st.rerun()
    with refusals():
        snap = data.live(v.db, who, home, now(), tz, v.pricing(), v.settings.stale_after_s)
    if snap.newest is None:
        st.warning("No reading from this home yet.")
    elif snap.stale:
        age = (snap.as_of - snap.newest).total_seconds()
        st.warning(f"Stale data: the newest reading is {age / 60:,.0f} min old "
                   f"({snap.newest.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M:%S}). "
                   "The meter or the pipeline may be down.", icon=":material/schedule:")
    c1, c2, c3 = st.columns(3)
    c1.metric("Power now", "—" if snap.power_w is None else f"{snap.power_w:,.0f} W",
              help="From the grid meter when the home has one (negative: exporting to the grid), "
                   "else the sum of its devices.")
    c2.metric("Today so far", f"{snap.today_kwh:,.2f} kWh")
    c3.metric("Cost today", f"{snap.today_cost:,.2f} {md_escape(snap.currency)}")
    st.caption(f"Updated {snap.as_of.astimezone(ZoneInfo(tz)):%H:%M:%S} ({md_escape(tz)}); "
               f"refreshes every {v.settings.live_refresh_s:g} s.")
    left, right = st.columns([1, 1])
    with left:
        st.subheader("Per device now")
        if snap.devices.filter(pl.col("power_w").is_not_null()).height:
            st.plotly_chart(charts.device_power(snap.devices), config=charts.CONFIG, key="devnow")
    with right:
        st.subheader("Last two hours")
        if snap.recent.height:
            st.plotly_chart(charts.recent_power(snap.recent, tz), config=charts.CONFIG, key="recent")
        else:
            st.caption("No complete minute in the last two hours.")
    table = snap.devices.select(
        "device_id", "kind", pl.col("power_w").round(1).alias("W now"),
        pl.col("last_seen").dt.convert_time_zone(tz).alias("last reading"),
        pl.col("today_kwh").round(3).alias("kWh today"),
        pl.col("today_cost").round(2).alias(f"{snap.currency} today"))
    st.dataframe(table, hide_index=True)


live_panel()
