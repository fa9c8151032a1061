"""Users (administrators): who may sign in, with which role and homes; and the audit log."""

import polars as pl
import streamlit as st

from ui import data
from ui.auth import Role, require_admin
from ui.common import principal, refusals, viewer
from ui.safe import md_escape

v = viewer()
p = principal()
st.title("Users")
with refusals():
    require_admin(p)
    log = data.audit_log(v.db, p)

users = v.accounts.users()
known_homes = sorted(set(data.homes_for(v.db, p)) | {h for u in users for h in u.homes})
st.dataframe(pl.DataFrame({
    "user": [u.username for u in users], "role": [u.role.value for u in users],
    "homes": [", ".join(u.homes) for u in users],
    "created": [u.created_at for u in users]}), hide_index=True)

with st.expander("Add a user", expanded=not users):
    with st.form("add_user", clear_on_submit=True):
        name = st.text_input("User name", key="add_name")
        role = st.selectbox("Role", [r.value for r in Role], key="add_role")
        homes = st.multiselect("Homes (homeowners)", known_homes, key="add_homes",
                               accept_new_options=True)
        password = st.text_input("Initial password", type="password", key="add_password")
        if st.form_submit_button("Add"):
            try:
                v.accounts.add_user(name.strip(), password, Role(role), homes, by=p.username)
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                st.success(f"Added {md_escape(name)}.")
                st.rerun()

if users:
    with st.expander("Change a user"):
        target = st.selectbox("User", [u.username for u in users], key="edit_user")
        current = next(u for u in users if u.username == target)
        role = st.selectbox("Role", [r.value for r in Role],
                            index=[r.value for r in Role].index(current.role.value), key="edit_role")
        homes = st.multiselect("Homes", sorted(set(known_homes) | set(current.homes)),
                               default=list(current.homes), key="edit_homes", accept_new_options=True)
        if st.button("Save access", key="edit_save"):
            try:
                v.accounts.set_access(target, Role(role), homes, by=p.username)
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                st.success(f"Saved {md_escape(target)}.")
        new_password = st.text_input("New password", type="password", key="edit_password")
        if st.button("Set password", key="edit_passwd"):
            try:
                v.accounts.set_password(target, new_password, by=p.username)
            except ValueError as exc:
                st.error(md_escape(exc))
            else:
                st.success(f"Password of {md_escape(target)} changed; their sessions ended.")
        if target != p.username and st.button(f"Remove {md_escape(target)}", key="edit_remove"):
            v.accounts.remove_user(target, by=p.username)
            st.rerun()

st.subheader("Audit log")
st.dataframe(log, hide_index=True)
