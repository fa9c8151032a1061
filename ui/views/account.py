"""Account · notifications: where a user's notices go (Apprise targets, shown masked), which
kinds, quiet hours, a test message, and what was sent lately. ``shems notify`` does the sending."""

from datetime import datetime, timezone

import polars as pl
import streamlit as st

from pipeline.notify.notices import ALL_KINDS, NoticeKind, test_message
from pipeline.notify.quiet import parse_hhmm
from sinks.rows import from_us
from ui.common import principal, viewer
from ui.notifications import NotifyStore, Prefs, apprise_send, send_to_targets
from ui.safe import md_escape

KIND_LABELS = {NoticeKind.ANOMALY: "Unusual consumption and device problems",
               NoticeKind.BUDGET: "Bill projected over my budget",
               NoticeKind.RECOMMENDATION: "New energy-saving tips"}

v = viewer()
p = principal()
store = NotifyStore(v.db)
st.title("Notifications")
st.caption("Alerts, budget warnings and new tips reach you by e-mail, push or chat through "
           "[Apprise](https://github.com/caronc/apprise/wiki) URLs. They are sent by `shems notify`.")

targets = store.targets(p.username)
st.subheader("Where to")
if targets:
    for t in targets:
        left, right = st.columns([5, 1])
        left.markdown(f"**{md_escape(t.label or 'target')}** · {md_escape(t.masked)}")
        if right.button("Remove", key=f"remove_target_{t.id}"):
            store.remove_target(p.username, t.id)
            st.rerun()
else:
    st.info("No target yet: add one below, e.g. `mailto://user:app-password@gmail.com` or `ntfy://my-topic`.")

with st.form("add_target", clear_on_submit=True):
    label = st.text_input("Name (optional)", key="target_label", placeholder="my phone")
    url = st.text_input("Apprise URL", type="password", key="target_url",
                        help="Kept in the store as typed (it holds a token or password); shown masked.")
    if st.form_submit_button("Add target"):
        try:
            store.add_target(p.username, url, label)
        except ValueError as exc:
            st.error(md_escape(exc))
        else:
            st.rerun()

if st.button("Send test message", key="send_test", disabled=not targets):
    title, body = test_message(p.username)
    reached, error = send_to_targets(targets, title, body, apprise_send)
    if reached:
        st.success(f"Test message sent to {len(reached)} of {len(targets)} "
                   f"target{'s' if len(targets) != 1 else ''}.")
    if error:
        st.error(md_escape(f"Not delivered: {error}"))

st.subheader("What and when")
prefs = store.prefs(p.username)
with st.form("prefs"):
    chosen = [k for k in ALL_KINDS if st.checkbox(KIND_LABELS[k], value=k in prefs.kinds, key=f"kind_{k.value}")]
    quiet_on = st.checkbox("Quiet hours (notices wait until they end)", value=bool(prefs.quiet_start),
                           key="quiet_on")
    c1, c2, c3 = st.columns(3)
    start = c1.text_input("From (HH:MM)", value=prefs.quiet_start or "22:00", key="quiet_start")
    end = c2.text_input("Until (HH:MM)", value=prefs.quiet_end or "07:00", key="quiet_end")
    tz = c3.text_input("Time zone (empty: the home's)", value=prefs.timezone or "", key="quiet_tz",
                       placeholder="Europe/London")
    if st.form_submit_button("Save"):
        try:
            if quiet_on:
                start, end = parse_hhmm(start).strftime("%H:%M"), parse_hhmm(end).strftime("%H:%M")
            store.set_prefs(p.username, Prefs(frozenset(chosen), start if quiet_on else None,
                                              end if quiet_on else None, tz.strip() or None))
        except ValueError as exc:
            st.error(md_escape(f"Not saved: {exc}"))
        else:
            st.success("Saved.")

history = store.history(p.username)
if history:
    st.subheader("Recently")

    def _when(us: int | None) -> datetime | None:
        return None if us is None else from_us(us).astimezone(timezone.utc)

    st.dataframe(pl.DataFrame({
        "Kind": [h[0] for h in history], "Home": [h[1] for h in history], "Message": [h[2] for h in history],
        "Queued": [_when(h[3]) for h in history], "Sent": [_when(h[4]) for h in history],
        "Problem": [h[5] or "" for h in history]}), hide_index=True)
