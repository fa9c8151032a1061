"""Plan: the home's plan for its battery, EV and appliances. The household accepts a proposed
plan here; ``shems execute`` then carries it out, and this page shows each command's fate and
every slot planned against measured."""

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts, data, fmt
from ui.auth import AccessDenied, require_home
from ui.common import home_page, now, refusals, user_locale
from ui.device_plans import PlanRefused, plan_cheapest_before
from ui.plans import PlanStore, planned_vs_actual
from ui.safe import md_escape

NOTE = "device_plan_note"


def _length(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


v, p, home, tz = home_page("Plan")
store = PlanStore(v.db)
with refusals():
    require_home(p, home)
zone = ZoneInfo(tz)
loc = user_locale(v)


def _cheapest_before() -> None:
    """One device's next run in the cheapest window before a time the household picks."""
    with refusals():
        devices = data.devices_now(v.db, p, home)
    switchable = devices.filter(pl.col("switchable"))["device_id"].to_list()
    if not switchable:
        return
    with st.expander("Run a device at the cheapest time"):
        if not p.owns(home):
            st.caption("Only the household plans its devices.")
            return
        a, b = st.columns(2)
        device = a.selectbox("Device", switchable, key="cheap_device", format_func=fmt.label)
        before = b.time_input("Done before", value=time(7, 0), key="cheap_before", step=timedelta(minutes=15))
        if st.button("Plan its next run", key="cheap_plan", type="primary"):
            try:
                made = plan_cheapest_before(v.db, v.accounts, v.pricing(), p, home, device, before, tz, now())
            except (PlanRefused, AccessDenied) as exc:
                st.error(md_escape(exc))
                return
            st.session_state[NOTE] = (
                f"{fmt.label(device)}: kept off until {made.on_at().astimezone(zone):%a %H:%M}, then on until "
                f"{made.off_at().astimezone(zone):%H:%M} ({made.run.describe()}); "
                f"{fmt.money(made.cost, made.currency, loc)} instead of "
                f"{fmt.money(made.baseline_cost, made.currency, loc)} at once. The commands go out at "
                "those times.")
            st.session_state.pop("plan_shown", None)  # show the new plan
            st.rerun()


_cheapest_before()
if st.session_state.get(NOTE):
    st.success(md_escape(st.session_state.pop(NOTE)))

ids = store.plans(home_id=home)
if not ids:
    st.info("No plan for this home yet: `shems plan --home … --store-url … --propose` proposes one.")
    st.stop()
shown = ids[-1]
if len(ids) > 1:
    # Newest first; a device's own plan may run beside the home's battery plan.
    shown = st.selectbox("Plan", list(reversed(ids)), key="plan_shown") or ids[-1]
stored = store.plan(shown)
assert stored is not None
cur = stored.currency
# The saving as the two amounts shown give it (0.10 - 0.03), not the unrounded difference (0.06).
shown_cost, shown_baseline = round(stored.cost, 2), round(stored.baseline_cost, 2)
saving = shown_baseline - shown_cost
scope = f" · for {md_escape(', '.join(stored.scope))} only" if stored.scope else ""
st.markdown(f"**{md_escape(stored.plan_id)}** · {md_escape(stored.status)}{scope} · "
            f"{stored.problem.start.astimezone(ZoneInfo(tz)):%a %d %b %H:%M} for "
            f"{stored.problem.slots} slots of {_length(stored.problem.slot.total_seconds())}")
a, b, c = st.columns(3)
a.metric("Cost with this plan", fmt.money(shown_cost, cur, loc))
b.metric("Without it", fmt.money(shown_baseline, cur, loc))
c.metric("Saving", fmt.money(saving, cur, loc))
if stored.status == "proposed":
    if not p.owns(home):
        st.caption("Only the household accepts its plans.")
    elif st.button("Accept this plan", key="plan_accept", type="primary"):
        if store.activate(stored.plan_id, p.username):
            v.accounts.audit(p.username, "plan_accept", home, None, stored.plan_id)
            st.success("Accepted: the devices will be told at the planned times.")
        else:
            st.warning("This plan is no longer a proposal.")
        st.rerun()
elif stored.status == "active":
    st.success(f"Accepted by {md_escape(stored.accepted_by)}; being carried out.")

slots = planned_vs_actual(store, stored.plan_id)
for device in ["grid", *slots[0].planned] if slots else []:
    st.plotly_chart(charts.plan_vs_actual(slots, device, tz), config=charts.CONFIG, key=f"plan_{device}")
commands = store.commands(stored.plan_id)
st.subheader(f"Commands ({len(commands)})")
st.dataframe(pl.DataFrame({
    "At": [f"{x.command.run_at.astimezone(zone):%a %d %b %H:%M}" for x in commands],
    "Device": [fmt.label(x.command.device_id) for x in commands],
    "Command": [x.command.set_command(x.command_id).describe() for x in commands],
    "Status": [x.status.replace("_", " ") for x in commands],
    "Measured": [fmt.NONE if x.measured_w is None else f"{fmt.number(x.measured_w, loc, 0)} W" for x in commands],
    "Note": [x.message for x in commands]},
    schema={"At": pl.Utf8, "Device": pl.Utf8, "Command": pl.Utf8, "Status": pl.Utf8, "Measured": pl.Utf8,
            "Note": pl.Utf8}), hide_index=True)
st.caption(f"Times in {md_escape(tz)}.")
