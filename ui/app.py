"""The shems viewer (``shems ui``): sign-in, then the pages the user's role allows.

Streamlit runs this script on every interaction; it checks the session against the store each
time, so an expired session or a removed user ends at the next click.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import metrics
from ui.accounts import SignInError
from ui.auth import Role
from ui.common import HOME, NOTICE, PRINCIPAL, TOKEN, current_principal, requested_home, viewer
from ui.data import home_choices, homes_for
from ui.safe import md_escape

# Not "pages/": Streamlit would also serve a folder of that name as pages of its own, signed in
# or not.
PAGES = Path(__file__).parent / "views"
HOME_CHOICES = 100  # homes an operator's picker lists at once

# An emoji, drawn by the browser: a ":material/...:" favicon is fetched from fonts.gstatic.com, a
# third party every viewer would call on each page (and a request that fails offline).
st.set_page_config(page_title="shems", page_icon="⚡", layout="wide")
v = viewer()
metrics.serve_once(v.settings.metrics_port)


def sign_in() -> None:
    st.title("shems · sign in")
    notice = st.session_state.pop(NOTICE, None)
    if notice:
        st.warning(md_escape(notice))
    with st.form("signin"):
        username = st.text_input("User name", key="signin_user")
        password = st.text_input("Password", type="password", key="signin_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            session = v.accounts.sign_in(username.strip(), password, _client())
        except SignInError as exc:
            metrics.SIGNINS.labels(result="throttled" if exc.retry_after else "refused").inc()
            st.error(md_escape(exc))
            return
        metrics.SIGNINS.labels(result="ok").inc()
        st.session_state[TOKEN] = session.token
        st.session_state[PRINCIPAL] = session.principal
        st.rerun()


def _client() -> str | None:
    try:
        ip = st.context.ip_address
    except Exception:  # no browser connection
        return None
    return ip if isinstance(ip, str) else None  # AppTest has no real client either


p = current_principal(v, touch=True)
if p is None:
    # Before sign-in every page's path shows the form, and once signed in opens its page, in a
    # hidden navigation: Streamlit keeps the last navigation drawn (the sidebar still listed a
    # signed-out user's pages), and a path missing from it gets Streamlit's "page not found"
    # dialog over the form.
    st.navigation([st.Page(sign_in, title="Sign in", default=True)]
                  + [st.Page(sign_in, title="Sign in", url_path=view.stem)
                     for view in sorted(PAGES.glob("*.py")) if view.stem not in ("__init__", "live")],
                  position="hidden")
    sign_in()
    st.stop()

home_pages = [
    st.Page(PAGES / "live.py", title="Live", icon=":material/bolt:", default=True),
    st.Page(PAGES / "history.py", title="History", icon=":material/show_chart:"),
    st.Page(PAGES / "forecast.py", title="Forecast", icon=":material/online_prediction:"),
    st.Page(PAGES / "alerts.py", title="Alerts", icon=":material/notifications:"),
    st.Page(PAGES / "devices.py", title="Devices", icon=":material/power:"),
    st.Page(PAGES / "bill.py", title="Bill", icon=":material/receipt_long:"),
    st.Page(PAGES / "flow.py", title="Energy flow", icon=":material/solar_power:"),
    st.Page(PAGES / "plan.py", title="Plan", icon=":material/event_upcoming:"),
]
sections = {"Home": home_pages,
            "Account": [st.Page(PAGES / "account.py", title="Notifications", icon=":material/mail:")]}
if p.sees_fleet:
    sections["Fleet"] = [st.Page(PAGES / "fleet.py", title="Fleet", icon=":material/location_city:")]
if p.role is Role.ADMIN:
    sections["Admin"] = [st.Page(PAGES / "users.py", title="Users", icon=":material/manage_accounts:")]
page = st.navigation(sections)

with st.sidebar:
    st.caption(f"Signed in as **{md_escape(p.username)}** ({p.role.value})")
    home = requested_home(v, p)
    if p.sees_fleet:
        # A fleet may hold thousands of homes: the picker lists those matching a search.
        found = st.text_input("Find a home", key="home_search", placeholder="part of a home id")
        homes = home_choices(v.db, p, found, limit=HOME_CHOICES, include=home)
    else:
        homes = homes_for(v.db, p)
    if homes:
        def _picked() -> None:
            st.session_state[HOME] = st.session_state["home_picker"]
            st.query_params[HOME] = st.session_state["home_picker"]

        st.selectbox("Home", homes, index=homes.index(home) if home in homes else None,
                     key="home_picker", on_change=_picked, placeholder="choose a home")
    if home is not None:
        if p.can_view(home):
            st.session_state[HOME] = home
        # Keep the home in the URL so a link (or a reload) opens the same home; a home the user
        # may not see stays in the URL too, and the page says it is refused.
        st.query_params[HOME] = home
    if st.button("Sign out"):
        v.accounts.sign_out(st.session_state[TOKEN], p.username)
        for key in (TOKEN, PRINCIPAL, HOME):
            st.session_state.pop(key, None)
        st.query_params.clear()
        st.rerun()

with metrics.PAGE_SECONDS.labels(page=page.title).time():
    page.run()
