"""Live: the home's power now, per device, and today's energy and cost, refreshed in place."""

from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data, fmt
from ui.common import current_principal, data_clock, home_page, refusals, show_data_age, user_locale
from ui.safe import md_escape

v, p, home, tz = home_page("Live")
loc = user_locale(v)


@st.fragment(run_every=v.settings.live_refresh_s)
def live_panel() -> None:
    # An auto-refresh is not activity: check the session without extending it.
    who = current_principal(v, touch=False)
    if who is None:
        st.rerun()
    # A home that stopped long ago (an imported history) shows its last day, not an empty today.
    clock = data_clock(v, who, home)
    show_data_age(clock, tz, loc)
    with refusals():
        snap = data.live(v.db, who, home, clock.as_of, tz, v.pricing(), v.settings.stale_after_s)
    wall = None if clock.historic else clock.as_of
    if snap.newest is None:
        st.warning("No reading from this home yet.")
    elif snap.stale and not clock.historic:
        st.warning(f"Stale data: the newest reading is from {fmt.ago(snap.newest, snap.as_of, loc)} "
                   f"({snap.newest.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M:%S}). "
                   "The meter or the pipeline may be down.", icon=":material/schedule:")
    day = "That day" if clock.historic else "Today"
    c1, c2, c3 = st.columns(3)
    c1.metric("Power now" if not clock.historic else "Last power reading",
              fmt.NONE if snap.power_w is None else f"{fmt.number(snap.power_w, loc, 0)} W",
              help="From the grid meter when the home has one (negative: exporting to the grid), "
                   "else the sum of its devices.")
    c2.metric(f"{day} so far", f"{fmt.number(snap.today_kwh, loc, 2)} kWh")
    c3.metric(f"Cost {day.lower()}", fmt.money(snap.today_cost, snap.currency, loc))
    if wall is not None:
        st.caption(f"Updated {wall.astimezone(ZoneInfo(tz)):%H:%M:%S} ({md_escape(tz)}); "
                   f"refreshes every {v.settings.live_refresh_s:g} s.")
    left, right = st.columns([1, 1])
    with left:
        st.subheader("Per device now")
        drawing = snap.devices.filter(pl.col("power_w").is_not_null() & (pl.col("power_w") != 0)
                                      & (pl.col("kind") != "meter"))
        if drawing.height:
            st.plotly_chart(charts.device_power(snap.devices), config=charts.CONFIG, key="devnow")
        elif snap.devices.filter(pl.col("kind") != "meter").height:
            st.caption("No appliance was drawing power at the last reading.")
        else:
            st.caption("This home has no sub-metered appliance.")
    with right:
        st.subheader("Last two hours")
        if snap.recent.height:
            st.plotly_chart(charts.recent_power(snap.recent, tz), config=charts.CONFIG, key="recent")
        else:
            st.caption("No complete minute in the last two hours.")
    table = snap.devices.select(
        pl.col("device_id").map_elements(fmt.label, return_dtype=pl.Utf8).alias("Device"),
        pl.col("kind").alias("Kind"),
        pl.col("power_w").round(1).cast(pl.Utf8).fill_null(fmt.NONE).alias("Power (W)"),
        pl.col("last_seen").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").fill_null(fmt.NONE)
        .alias("Last reading"),
        pl.col("today_kwh").round(3).alias(f"Energy {day.lower()} (kWh)"),
        pl.col("today_cost").map_elements(lambda c: fmt.money(c, snap.currency, loc), return_dtype=pl.Utf8)
        .alias(f"Cost {day.lower()}"))
    st.dataframe(table, hide_index=True)


live_panel()
