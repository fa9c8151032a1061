"""What every page shares: the store connection, the signed-in user, the chosen home, and the
way refusals are shown. Pages never decide access themselves: they pass the principal and the
requested home to ``ui.data`` / ``ui.control`` and show the ``AccessDenied`` they may get back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from zoneinfo import ZoneInfo

import streamlit as st

from ui import fmt
from ui.accounts import Accounts, SessionExpired
from ui.auth import AccessDenied, Principal
from ui.cost import Pricing, load_pricing
from ui.data import home_choices, home_timezone, newest_reading
from ui.db import Database
from ui.safe import md_escape
from ui.settings import ViewerSettings, load_settings

TOKEN = "session_token"
PRINCIPAL = "principal"
HOME = "home"
NOTICE = "signin_notice"


@dataclass(frozen=True)
class Viewer:
    settings: ViewerSettings
    db: Database
    accounts: Accounts

    def pricing(self) -> Pricing:
        return self._pricing

    @cached_property
    def _pricing(self) -> Pricing:
        # Read once per run of a page (a Viewer is made per run): the home's time zone and the
        # page's prices both come from it.
        return load_pricing(self.db, self.settings)


@st.cache_resource(show_spinner=False, on_release=lambda db: db.close())
def _database(url: str) -> Database:
    return Database(url, migrate=True)


def viewer() -> Viewer:
    settings = load_settings()
    db = _database(settings.store_url)
    return Viewer(settings, db, Accounts(db, settings))


def now() -> datetime:
    return datetime.now(timezone.utc)


def current_principal(v: Viewer, *, touch: bool) -> Principal | None:
    """The signed-in user of this browser session, checked against the store on every run;
    None (with a notice for the sign-in page) when the session has ended."""
    token = st.session_state.get(TOKEN)
    if not token:
        return None
    try:
        principal = v.accounts.resume(token, touch=touch)
    except SessionExpired as exc:
        for key in (TOKEN, PRINCIPAL, HOME):
            st.session_state.pop(key, None)
        st.session_state[NOTICE] = str(exc)
        return None
    st.session_state[PRINCIPAL] = principal
    return principal


def principal() -> Principal:
    """The principal app.py established for this run (pages run after it)."""
    p = st.session_state.get(PRINCIPAL)
    if p is None:
        st.error("Please sign in.")
        st.stop()
    return p


def requested_home(v: Viewer, p: Principal) -> str | None:
    """The home this run is about: ``?home=`` wins (it is what a shared or edited link says),
    then the last home picked, then the first the user may see. Not checked here: the data
    layer refuses a home the user may not see, and the page shows that refusal."""
    asked = st.query_params.get(HOME)
    if asked:
        return asked
    remembered = st.session_state.get(HOME)
    if remembered:
        return remembered
    homes = home_choices(v.db, p, limit=1)
    return homes[0] if homes else None


def home_or_stop(v: Viewer, p: Principal) -> str:
    home = requested_home(v, p)
    if home is None:
        st.info("There is no home to show yet: no device has reported to this store."
                if p.sees_fleet else "Your account has no home yet. Ask an administrator.")
        st.stop()
    return home


@contextmanager
def refusals() -> Iterator[None]:
    """Show AccessDenied as an error and stop the page, so nothing after it renders."""
    try:
        yield
    except AccessDenied as exc:
        st.error(md_escape(exc))
        st.stop()


def timezone_for(v: Viewer, p: Principal, home: str) -> str:
    """The home's time zone, the same on every page: its registry's, else its tariff's (what the
    Bill page bills days and periods in), else the browser's. An imported home has no registry
    zone, and its pages followed the browser while its bill followed the tariff: a New York
    browser showed a London home's 'today' five hours late."""
    known = home_timezone(v.db, p, home, "")
    if known:
        return known
    book = v.pricing().book
    if book is not None and book.history(home):
        return book.timezone(home)
    try:
        browser = st.context.timezone
    except Exception:  # an old client
        browser = None
    if not isinstance(browser, str):
        browser = None
    return browser or v.settings.timezone


def page_header(title: str, home: str | None = None) -> None:
    """The page's title; the home id comes from the URL, so it is escaped like any other input."""
    st.title(title if home is None else f"{title} · {md_escape(home)}")


def user_locale(v: Viewer) -> str:
    """The setting's locale, else the browser's language, else en_GB."""
    if v.settings.locale:
        return fmt.locale(v.settings.locale)
    try:
        tag = st.context.locale
    except Exception:  # an old client, or AppTest
        tag = None
    return fmt.locale(tag if isinstance(tag, str) else None)


@dataclass(frozen=True)
class DataClock:
    """The instant a page of one home is about: the wall clock while the home reports, else its
    newest reading (an imported history opens on its own last days, not on an empty today)."""

    as_of: datetime
    newest: datetime | None
    historic: bool  # as_of is the newest reading, not now

    def note(self, tz: str, loc: str) -> str | None:
        if not self.historic or self.newest is None:
            return None
        local = self.newest.astimezone(ZoneInfo(tz))
        return (f"Showing data up to {local:%Y-%m-%d %H:%M}, {fmt.ago(self.newest, now(), loc)}: "
                "this home has sent nothing newer.")


def data_clock(v: Viewer, p: Principal, home: str) -> DataClock:
    with refusals():
        newest = newest_reading(v.db, p, home)
    wall = now()
    if newest is not None and (wall - newest).total_seconds() > v.settings.history_after_s:
        # One minute past the newest reading: the minute that holds it is inside every range.
        return DataClock(newest + timedelta(minutes=1), newest, True)
    return DataClock(wall, newest, False)


def show_data_age(clock: DataClock, tz: str, loc: str) -> None:
    note = clock.note(tz, loc)
    if note:
        st.info(md_escape(note), icon=":material/history:")


def home_page(title: str) -> tuple[Viewer, Principal, str, str]:
    """How every page of one home starts: the viewer, the signed-in principal, the home they may
    see (else the page stops), the page's title, and the home's time zone (a refusal stops the
    page)."""
    v = viewer()
    p = principal()
    home = home_or_stop(v, p)
    page_header(title, home)
    with refusals():
        tz = timezone_for(v, p, home)
    return v, p, home, tz
