"""Alerts and recommendations: what looks wrong, and what would save money.

An outage that silences every device at once is one alert listing the devices, not one per
device; alerts stay listed (closed ones as far back as asked) and the household can acknowledge
them. Recommendations say which data they were computed from and step aside when it is stale."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import data, fmt
from ui.auth import AccessDenied
from ui.common import data_clock, home_page, now, refusals, show_data_age, user_locale
from ui.device_plans import PlanRefused, plan_recommendation
from ui.safe import md_escape

PLANNED = "recommendation_plan_note"

v, p, home, tz = home_page("Alerts")
loc = user_locale(v)
zone = ZoneInfo(tz)
clock = data_clock(v, p, home)
show_data_age(clock, tz, loc)
can_decide = p.owns(home)

SPANS = {"7 days": timedelta(days=7), "30 days": timedelta(days=30), "a year": timedelta(days=365),
         "all": None}
span_name = st.segmented_control("Closed alerts from the last", list(SPANS), default="30 days",
                                 key="alerts_span") or "30 days"
with refusals():
    found = data.anomalies(v.db, p, home, clock.as_of, SPANS[span_name])
    recs = data.recommendations(v.db, p, home)
    devices = data.devices_now(v.db, p, home)
alerts = data.grouped_alerts(found)


# What each kind of anomaly is called on the page.
WHAT = {"silent": "stopped reporting", "long_running": "long running", "high_consumption": "unusually high use",
        "duty_cycle_drift": "cycling unusually", "flat_line": "stuck reading",
        "counter_backwards": "energy counter went back"}


def _what(kind: str) -> str:
    return WHAT.get(kind, kind.replace("_", " "))


def _when(ts) -> str:
    return f"{ts.astimezone(zone):%a %d %b %Y %H:%M}"


def _devices(names: list[str]) -> str:
    labels = [md_escape(fmt.label(d)) for d in names]
    return labels[0] if len(labels) == 1 else f"{fmt.plural(len(labels), 'device')}: {', '.join(labels)}"


def _ack(i: int, row: dict) -> None:
    if row["acknowledged"]:
        st.caption(f"Acknowledged by {md_escape(row['acknowledged_by'] or 'someone')}")
    elif can_decide and st.button("Acknowledge", key=f"ack_{i}"):
        try:
            data.acknowledge(v.db, v.accounts, p, home, row["keys"])
        except AccessDenied as exc:
            st.error(md_escape(exc))
        else:
            st.rerun()


# A meter that stopped reporting is an alert for the household as much as for the operator
# (the Fleet page lists it by the same rule).
wall = now()
silent = devices.filter((pl.col("kind") == "meter")
                        & (pl.col("last_seen").is_null()
                           | (pl.col("last_seen") < wall - timedelta(seconds=v.settings.silent_after_s))))
open_ = alerts.filter(pl.col("open"))
st.subheader(f"Open alerts ({open_.height + silent.height})")
for row in silent.iter_rows(named=True):
    seen = row["last_seen"]
    st.warning(f"**{md_escape(fmt.label(row['device_id']))}** has sent nothing "
             + (f"since {_when(seen)} ({fmt.ago(seen, wall, loc)})." if seen else "yet.")
             + " Is it powered and online?", icon=":material/signal_disconnected:")
if open_.is_empty() and silent.is_empty():
    st.success("Nothing unusual right now.")
for i, row in enumerate(open_.iter_rows(named=True)):
    kind = md_escape(_what(row["kind"]))
    if len(row["devices"]) > 1:
        text = f"**{_devices(row['devices'])}** · {kind} since {_when(row['started_at'])}"
    else:
        text = (f"**{md_escape(fmt.label(row['devices'][0]))}** · {kind} since {_when(row['started_at'])}"
                f"\n\n{md_escape(row['messages'][0])}")
    st.warning(text)
    _ack(i, row)

closed = alerts.filter(~pl.col("open"))
st.subheader(f"Earlier alerts ({closed.height})")
if closed.is_empty():
    st.caption(f"No alert in the last {span_name}." if SPANS[span_name] else "No earlier alert.")
else:
    st.dataframe(closed.select(
        pl.col("devices").map_elements(lambda d: ", ".join(fmt.label(x) for x in d), return_dtype=pl.Utf8)
        .alias("Devices"),
        pl.col("kind").map_elements(_what, return_dtype=pl.Utf8).alias("What"),
        pl.col("started_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").alias("From"),
        pl.col("ended_at").dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d %H:%M").fill_null(fmt.NONE)
        .alias("Until"),
        pl.when(pl.col("devices").list.len() > 1)
        .then(pl.format("{} devices at once", pl.col("devices").list.len()))
        .otherwise(pl.col("messages").list.first()).alias("Details"),
        pl.when(pl.col("acknowledged")).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("Acknowledged"),
    ), hide_index=True, column_config={
        "From": st.column_config.TextColumn(
            "From", help="When it became unusual. A meter that stopped reporting: once its silence "
                         "outlasted its usual longest gap; Details say since when it sent nothing."),
    })
    unacked = closed.filter(~pl.col("acknowledged"))
    what = "Acknowledge it" if unacked.height == 1 else f"Acknowledge all {unacked.height}"
    if can_decide and unacked.height and st.button(what, key="ack_all"):
        try:
            data.acknowledge(v.db, v.accounts, p, home, [k for keys in unacked["keys"].to_list() for k in keys])
        except AccessDenied as exc:
            st.error(md_escape(exc))
        else:
            st.rerun()

st.subheader("Recommendations")
newest = clock.newest
current = recs if newest is None else recs.filter(
    pl.col("updated_at") >= newest - data.RECOMMENDATION_STALE)
stale = recs.join(current.select("kind", "device_id"), on=["kind", "device_id"], how="anti")
if current.is_empty():
    st.info("No recommendation yet." if recs.is_empty()
            else "No current recommendation: the ones below came from older data.")
if st.session_state.get(PLANNED):
    level, note = st.session_state.pop(PLANNED)
    (st.success if level == "success" else st.warning)(md_escape(note))
if current.height and not can_decide:
    st.caption("Only the household decides on its recommendations.")


def _recommendation(i: int, row: dict, decide: bool) -> None:
    with st.container(border=True):
        saving = f"≈ {fmt.money(row['money_per_month'], row['currency'], loc)} a month"
        if row["kwh_per_month"]:  # a shift in time saves money, not energy
            saving += f" · {fmt.number(row['kwh_per_month'], loc)} kWh a month"
        st.markdown(f"**{md_escape(row['title'])}**  \n{saving}")
        st.caption(md_escape(fmt.money_in_text(row["detail"], row["currency"], loc)))
        st.caption(f"From the data up to {row['updated_at'].astimezone(zone):%d %b %Y} "
                   f"(first suggested {row['created_at'].astimezone(zone):%d %b %Y}).")
        status = row["status"]
        if status != "new":
            when = row["status_changed_at"]
            st.caption(f"{md_escape(status.capitalize())} by {md_escape(row['status_changed_by'] or 'someone')}"
                       + (f" on {when.astimezone(zone):%d %b %H:%M}" if when else ""))
        if status == "accepted":
            _measured(measured.get((row["kind"], row["device_id"])), row["currency"])
        if decide:
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
                    if choice == "accepted" and row["kind"] == "load_shift" and row["device_id"]:
                        _plan(row)
                    st.rerun()


def _plan(row: dict) -> None:
    """An accepted load shift becomes the device's next run, planned at the recommended start."""
    device = row["device_id"]
    try:
        made = plan_recommendation(v.db, v.accounts, v.pricing(), p, home, device, row["title"], tz, now())
    except (PlanRefused, AccessDenied) as exc:
        st.session_state[PLANNED] = ("warning", f"Accepted, but not planned: {exc}")
        return
    st.session_state[PLANNED] = ("success", (
        f"Planned (plan {made.plan_id}): {device} on at {made.on_at().astimezone(zone):%a %H:%M}, off at "
        f"{made.off_at().astimezone(zone):%H:%M} ({made.run.describe()}). shems execute sends the "
        "commands then; the Plan page follows them."))


def _measured(m, currency: str) -> None:
    """What an accepted recommendation measurably saved (baseline vs actual, `shems savings`)."""
    if m is None:
        return
    if m.state != "measured" or m.savings is None:
        st.caption(f"Savings: {md_escape(m.state)} ({md_escape(m.note)}).")
        return
    s = m.savings
    if s.method == "price paid per kWh":
        text = (f"Measured: {fmt.money(s.money, currency, loc)} saved over {fmt.plural(s.days, 'day')} "
                f"(± {fmt.money(s.money_uncertainty, currency, loc)}, 90 % confidence)")
    else:
        money = "" if s.money is None else f", {fmt.money(s.money, currency, loc)}"
        text = (f"Measured: {fmt.number(s.saved_kwh, loc)} kWh saved{money} over {fmt.plural(s.days, 'day')} "
                f"(± {fmt.number(s.uncertainty_kwh, loc)} kWh, 90 % confidence)")
    if not s.significant:
        text += "; not yet distinguishable from no change"
    st.caption(text + ".")


measured: dict = {}
if (recs["status"] == "accepted").any():
    try:
        measured = data.measured_savings(v.db, p, home)
    except Exception as exc:  # noqa: BLE001 - a measurement that fails must not hide the advice
        st.caption(f"Savings could not be measured: {md_escape(str(exc))}")
for i, row in enumerate(current.iter_rows(named=True)):
    _recommendation(i, row, can_decide)
if stale.height:
    with st.expander(f"Out of date ({fmt.plural(stale.height, 'recommendation')}): their data has moved on"):
        for i, row in enumerate(stale.iter_rows(named=True)):
            _recommendation(1000 + i, row, False)
