"""Devices and control: switch a device on or off now or at a set time, see the device's answer,
and check from its own readings that it did what it said."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from pipeline.records import CommandState
from ui import control, data, fmt, metrics
from ui.auth import AccessDenied
from ui.common import home_page, now, refusals
from ui.safe import md_escape

LAST = "last_command"

v, p, home, tz = home_page("Devices")
with refusals():
    devices = data.devices_now(v.db, p, home)
    drawing = control.switched_off_but_drawing(devices, v.db, p, home, v.settings.off_threshold_w)
zone = ZoneInfo(tz)

for row in drawing.iter_rows(named=True):
    st.error(f"**{md_escape(row['device_id'])}** was switched off at "
             f"{row['switched_off_at'].astimezone(zone):%H:%M:%S} but still draws "
             f"{row['power_w']:,.0f} W.", icon=":material/warning:")

st.dataframe(devices.select(
    pl.col("device_id").map_elements(fmt.label, return_dtype=pl.Utf8).alias("Device"), pl.col("kind").alias("Kind"),
    pl.col("power_w").round(1).cast(pl.Utf8).fill_null("—").alias("Power (W)"),
    pl.col("last_seen").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").fill_null("—")
    .alias("Last reading"),
    pl.col("switchable").alias("Can be switched")), hide_index=True)

switchable = devices.filter(pl.col("switchable"))["device_id"].to_list()
st.subheader("Switch")
if not switchable:
    st.info("No switchable device in this home (meters and PV are not switched).")
else:
    device = st.selectbox("Device", switchable, key="control_device", format_func=fmt.label)
    c1, c2, _ = st.columns([1, 1, 2])
    wanted: tuple[CommandState, datetime | None] | None = None
    if c1.button("Switch on", key="control_on"):
        wanted = (CommandState.ON, None)
    if c2.button("Switch off", key="control_off", type="primary"):
        wanted = (CommandState.OFF, None)
    with st.expander("Schedule"):
        local_now = now().astimezone(zone)
        s1, s2, s3 = st.columns(3)
        day = s1.date_input("Day", value=local_now.date(), min_value=local_now.date(),
                            key="schedule_day")
        at = s2.time_input("Time", value=(local_now + timedelta(hours=1)).time().replace(
            second=0, microsecond=0), key="schedule_time", step=timedelta(minutes=5))
        state = s3.radio("Switch", ["off", "on"], horizontal=True, key="schedule_state")
        if st.button("Schedule", key="control_schedule"):
            run_at = datetime.combine(day, at, zone).astimezone(timezone.utc)
            if run_at <= now():
                st.error("Pick a time in the future.")
            else:
                wanted = (CommandState(state), run_at)
    if wanted is not None:
        try:
            sent = control.send_command(v.db, v.accounts, v.settings, p, home, device, *wanted)
        except (control.CommandRefused, AccessDenied) as exc:
            metrics.COMMANDS.labels(result="refused").inc()
            st.error(md_escape(exc))
        else:
            metrics.COMMANDS.labels(result="sent").inc()
            st.session_state[LAST] = sent.command_id


def show_status() -> None:
    with refusals():
        command, status = control.command_status(v.db, p, st.session_state[LAST], now(), v.settings)
    what = f"{command.device_id} {command.state.value}" + (
        f" at {command.run_at.astimezone(zone):%H:%M}" if command.run_at else "")
    show = {"info": st.info, "success": st.success, "warning": st.warning, "error": st.error}
    show[status.level](md_escape(f"Last command ({what}, {command.command_id}): {status.message}"))
    if status.final and st.session_state.get("last_command_polling"):
        st.session_state["last_command_polling"] = False
        st.rerun()  # a full run, which stops the polling below


if st.session_state.get(LAST):
    with refusals():
        _command, first = control.command_status(v.db, p, st.session_state[LAST], now(), v.settings)
    polling = not first.final
    st.session_state["last_command_polling"] = polling
    st.fragment(show_status, run_every=1.0 if polling else None)()

st.subheader("Recent commands")
with refusals():
    log = control.recent_commands(v.db, p, home)
if log.is_empty():
    st.caption("No command sent to this home yet.")
else:
    st.dataframe(log.select(
        pl.col("issued_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M:%S").alias("Sent"),
        pl.col("issued_by").alias("By"), pl.col("device_id").map_elements(fmt.label, return_dtype=pl.Utf8).alias("Device"), pl.col("state").alias("Switch to"),
        pl.col("run_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").fill_null("now")
        .alias("Scheduled for"),
        # Unanswered: "no answer" only once the device has had its time to answer, as the
        # status above says; a command sent a second ago is still awaited.
        pl.when(pl.col("answer").is_not_null()).then(pl.col("answer"))
        .when(pl.col("run_at").is_not_null() & (pl.col("run_at") > pl.lit(now()))).then(pl.lit("scheduled"))
        .when(pl.coalesce("run_at", "issued_at") > pl.lit(now() - timedelta(seconds=v.settings.ack_timeout_s)))
        .then(pl.lit("waiting")).otherwise(pl.lit("no answer")).alias("Answer"),
        pl.col("answered_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M:%S").fill_null("—")
        .alias("Answered")), hide_index=True)
