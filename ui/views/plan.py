"""Plan: the home's plan for its battery, EV and appliances. The household accepts a proposed
plan here; ``shems execute`` then carries it out, and this page shows each command's fate and
every slot planned against measured."""

from zoneinfo import ZoneInfo

import polars as pl
import streamlit as st

from ui import charts
from ui.auth import require_home
from ui.common import home_page, refusals
from ui.plans import PlanStore, planned_vs_actual
from ui.safe import md_escape


def _length(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


v, p, home, tz = home_page("Plan")
store = PlanStore(v.db)
with refusals():
    require_home(p, home)
ids = store.plans(home_id=home)
if not ids:
    st.info("No plan for this home yet: `shems plan --home … --store-url … --propose` proposes one.")
    st.stop()
stored = store.plan(ids[-1])
assert stored is not None
cur = md_escape(stored.currency)
saving = stored.baseline_cost - stored.cost
st.markdown(f"**{md_escape(stored.plan_id)}** · {md_escape(stored.status)} · "
            f"{stored.problem.start.astimezone(ZoneInfo(tz)):%a %d %b %H:%M} for "
            f"{stored.problem.slots} slots of {_length(stored.problem.slot.total_seconds())}")
a, b, c = st.columns(3)
a.metric("Cost with this plan", f"{stored.cost:,.2f} {cur}")
b.metric("Without it", f"{stored.baseline_cost:,.2f} {cur}")
c.metric("Saving", f"{saving:,.2f} {cur}")
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
    "at": [x.command.run_at for x in commands], "device": [x.command.device_id for x in commands],
    "command": [x.command.set_command(x.command_id).describe() for x in commands],
    "status": [x.status.replace("_", " ") for x in commands],
    "measured W": [x.measured_w for x in commands], "note": [x.message for x in commands]},
    schema={"at": pl.Datetime("us", "UTC"), "device": pl.Utf8, "command": pl.Utf8, "status": pl.Utf8,
            "measured W": pl.Float64, "note": pl.Utf8}), hide_index=True)
