"""The viewer against hostile input: device names, registry text, ``?home=`` and answers that are
markup; CSV exports of formula-like names; sign-in guessing from one address or many; requests
without Streamlit's XSRF token; a broker that refuses. Pages run in Streamlit's AppTest, the XSRF
checks against a real `shems ui` server."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import polars as pl
import pytest
import streamlit as st
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from pipeline.tools.broker import free_port
from tests.viewer_seed import (
    APP,
    FETCH,
    FORMULA,
    HOSTILE_COMMAND,
    HOSTILE_DEVICES,
    HOSTILE_HOME,
    HOSTILE_PASSWORD,
    PHISH,
    PLOT_LINK,
    SCRIPT,
    apply_env,
    seed_hostile,
    viewer_env,
)
from tests.viewer_server import ViewerServer
from ui.accounts import LOCAL_CLIENT, Accounts, SignInError
from ui.auth import Role
from ui.db import Database
from ui.safe import WORD_JOINER, md_escape, plot_escape, spreadsheet_safe
from ui.settings import ViewerSettings

HOSTILE_TEXTS = HOSTILE_DEVICES + [f"{PHISH} {FETCH} {SCRIPT}"]
PAGES = ["views/live.py", "views/history.py", "views/forecast.py", "views/alerts.py",
         "views/devices.py"]
# CommonMark plus the GFM parts Streamlit renders; markdown-it-py has no GFM autolink-literal
# rule, so bare URLs are checked on the source below.
MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
MARKUP_TOKENS = {"link_open", "image", "html_inline", "html_block"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text_nodes(source: str) -> str:
    parser = _Text()
    parser.feed(MARKDOWN.render(source))
    return "".join(parser.parts).strip("\n")  # entities already decoded by the parser


def rendered_text(source: str) -> str:
    """What a person reads (the word joiners that break autolinks are invisible)."""
    return _text_nodes(source).replace(WORD_JOINER, "")


# remark's GFM autolink literals (mdast-util-gfm-autolink-literal), which Streamlit applies to
# the text after Markdown escapes are resolved.
GFM_AUTOLINKS = [re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),
                 re.compile(r"(?<![^\s\W])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")]


def markup_in(source: str) -> list[str]:
    """What in this Markdown source would render as something other than text."""
    found = []
    for token in MARKDOWN.parse(source):
        for t in [token, *(token.children or [])]:
            if t.type in MARKUP_TOKENS or t.type.startswith("heading") or t.type.startswith("bullet"):
                found.append(f"{t.type}: {t.content or t.attrs}")
    text = _text_nodes(source)
    found += [f"autolink: {m.group(0)}" for p in GFM_AUTOLINKS for m in p.finditer(text)]
    # KaTeX and Streamlit's :colour[...] directives.
    for pattern in (r"(?<!\\)\$", r"(?<!\\)\["):
        if re.search(pattern, source):
            found.append(f"unescaped {pattern}")
    return found


# ------------------------------------------------------------------------------ the escapes

@pytest.mark.parametrize("text", HOSTILE_DEVICES + [
    "a_b_ *c* `d` ~~e~~ <https://evil.example> x@evil.example \\[ \\\\ & &amp; &lt;",
    "1. first\n> quote\n    code", "\u2028line\x00null\x1bescape", "ok-name_2"])
def test_md_escape_leaves_only_text_and_shows_every_character(text):
    source = md_escape(text)
    assert markup_in(source) == []
    # The person reads the name as it is (line breaks and control characters become spaces).
    assert rendered_text(source) == re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", text).strip()


def test_plot_escape_keeps_plotly_from_making_links_or_tags():
    assert plot_escape(PLOT_LINK) == '&lt;a href="https://evil.example"&gt;open&lt;/a&gt;'
    assert plot_escape(SCRIPT) == "&lt;img src=x onerror=alert(1)&gt;"
    assert plot_escape("A & B") == "A &amp; B"


def test_spreadsheet_exports_neutralise_formulas_and_keep_numbers_numeric():
    frame = pl.DataFrame({
        "device_id": [FORMULA, "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "kettle", None, "a=b"],
        "kwh": [-1.25, 0.5, -0.0, 2.0, 1.0, 1.0, 3.0, 4.0, 5.0]})
    safe = spreadsheet_safe(frame)
    assert safe["device_id"].to_list() == [
        "'" + FORMULA, "'+SUM(A1)", "'-2+3", "'@cmd", "'\tx", "'\rx", "kettle", None, "a=b"]
    assert safe["kwh"].dtype == pl.Float64 and safe["kwh"].to_list() == frame["kwh"].to_list()
    csv = safe.write_csv()
    assert "\n'=cmd|' /C calc'!A0,-1.25\n" in csv
    assert all(not line.startswith(("=", "+", "@")) for line in csv.splitlines())


# ------------------------------------------------------------------------------ pages (AppTest)

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'viewer.db'}"
    now = datetime.now(timezone.utc)
    seed_hostile(url, now)
    db = Database(url)
    try:
        Accounts(db).add_user("olga", "olga-secret-12", Role.OPERATOR, by="test")
    finally:
        db.close()
    yield url
    st.cache_resource.clear()


@pytest.fixture
def env(hostile, monkeypatch):
    apply_env(monkeypatch, viewer_env(hostile))


def _token(url: str, user: str, password: str) -> str:
    db = Database(url, migrate=False)
    try:
        return Accounts(db).sign_in(user, password).token
    finally:
        db.close()


def page(url: str, user: str, password: str, path: str, **state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["session_token"] = _token(url, user, password)
    at.query_params["home"] = state.pop("home", HOSTILE_HOME)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_sources(at: AppTest) -> list[tuple[str, str]]:
    """Every string of the page that Streamlit renders as Markdown."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error",
                 "success", "toast"):
        out += [(kind, e.value) for e in getattr(at, kind)]
    for m in at.metric:
        out += [("metric label", m.label), ("metric value", m.value),
                ("metric delta", m.proto.delta)]
    out += [("expander", e.label) for e in at.expander]
    out += [("button", b.label) for b in at.button]
    return out


def plotly_strings(at: AppTest) -> list[str]:
    strings: list[str] = []

    def walk(node) -> None:
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for chart in at.get("plotly_chart"):
        walk(json.loads(chart.proto.spec))
    return strings


def assert_no_markup(at: AppTest) -> str:
    sources = markdown_sources(at)
    bad = [(kind, text, markup_in(text)) for kind, text in sources if markup_in(text)]
    assert not bad, bad
    for s in plotly_strings(at):
        assert not re.search(r"<\s*(a|img|b|i|br|span|sup|sub|em)\b", s, re.I), s
    return "\n".join(rendered_text(text) for _, text in sources)


@pytest.mark.parametrize("path", PAGES)
def test_hostile_device_names_render_as_text_on_every_page(hostile, env, path):
    at = page(hostile, "hana", HOSTILE_PASSWORD, path)
    assert not at.error or path == "views/devices.py", [e.value for e in at.error]
    shown = assert_no_markup(at)
    assert at.title[0].value == f"{path[6:-3].capitalize()} · {md_escape(HOSTILE_HOME)}"
    if path == "views/alerts.py":
        # The anomaly reads, to the person, exactly as the device wrote it.
        assert f"{PHISH} · long running since" in shown
        assert f"{PHISH} {FETCH} {SCRIPT}" in shown
        assert PHISH in shown and f"{SCRIPT} {FETCH}" in shown  # recommendation title, detail
    if path in ("views/live.py", "views/history.py"):
        # The charts name the devices, escaped for Plotly (it shows them as the text above).
        strings = plotly_strings(at)
        assert plot_escape(PLOT_LINK) in strings and plot_escape(SCRIPT) in strings, strings[:20]


def test_a_devices_rejection_message_is_shown_as_text(hostile, env):
    at = page(hostile, "hana", HOSTILE_PASSWORD, "views/devices.py", last_command=HOSTILE_COMMAND)
    shown = assert_no_markup(at)
    assert f"{PHISH} refused the command: {PHISH} {FETCH}." in shown
    assert [e.value for e in at.error if e.value.startswith("Last command")]


@pytest.mark.parametrize("asked", [PHISH, FETCH, SCRIPT])
def test_a_hostile_home_in_the_url_is_refused_as_text(hostile, env, asked):
    at = page(hostile, "hana", HOSTILE_PASSWORD, "views/alerts.py", home=asked)
    shown = assert_no_markup(at)
    assert f"You do not have access to home {asked!r}." in shown
    # An operator may ask for any home: the title names it, as text.
    at = page(hostile, "olga", "olga-secret-12", "views/live.py", home=asked)
    shown = assert_no_markup(at)
    assert f"Live · {asked}" in shown


def test_history_csv_neutralises_formula_device_names(hostile, env, monkeypatch):
    # The CSV is made when the person clicks (a deferred download): keep the page's callable as
    # Streamlit registers it, then call it as the download would.
    from streamlit.runtime.media_file_manager import MediaFileManager

    registered: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def keep(self, data, mimetype, coordinates, file_name=None, **kwargs):
        registered[file_name] = data
        return original(self, data, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    page(hostile, "hana", HOSTILE_PASSWORD, "views/history.py")
    (name,) = [n for n in registered if n.endswith(".csv")]
    assert re.fullmatch(r"shems_hostile-home_\d{4}-\d\d-\d\d_\d{4}-\d\d-\d\d\.csv", name)
    text = registered[name]()
    as_text = pl.read_csv(text.encode(), infer_schema_length=0)
    devices = set(as_text["device_id"].to_list())
    assert "'" + FORMULA in devices and f"'{HOSTILE_DEVICES[7]}" not in devices
    assert not [d for d in devices if d.startswith(("=", "+", "-", "@", "\t", "\r"))]
    typed = pl.read_csv(text.encode())
    assert typed["kwh"].dtype == pl.Float64 and typed["kwh"].sum() > 0


# ------------------------------------------------------------------------------ sign-in limits

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def tick(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def accounts(store_url, monkeypatch):
    # Real Argon2id at its lowest cost: these tests verify hundreds of passwords.
    from argon2 import PasswordHasher

    import ui.accounts

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(ui.accounts, "_HASHER", cheap)
    monkeypatch.setattr(ui.accounts, "_DUMMY_HASH", cheap.hash("not a password"))
    db = Database(store_url)
    clock = Clock(T0)
    acc = Accounts(db, ViewerSettings(signin_key="test-key"), clock)
    acc.add_user("adam", "adam-secret-123", Role.ADMIN, by="test")
    yield acc, clock
    db.close()


def _fail(acc: Accounts, name: str, client: str) -> str:
    with pytest.raises(SignInError) as refused:
        acc.sign_in(name, "wrong-password", client)
    return str(refused.value)


def test_a_spray_of_names_from_one_address_slows_down_and_others_are_not_slowed(accounts):
    acc, clock = accounts
    attacker = "203.0.113.7"
    for i in range(5):
        assert _fail(acc, f"user{i}", attacker) == "Wrong user name or password."
    # The 6th try, at another name, from the same address: it must wait, and a wait refused is
    # not counted (nothing to gain by hammering).
    assert _fail(acc, "user5", attacker) == "Too many failed sign-ins. Try again in 1 second."
    waits = []
    for i in range(5, 30):
        with pytest.raises(SignInError) as refused:
            acc.sign_in(f"user{i}", "wrong-password", attacker)
        waits.append(refused.value.retry_after)
        if refused.value.retry_after is None:
            continue
        clock.tick(refused.value.retry_after.total_seconds())
        assert _fail(acc, f"user{i}", attacker) == "Wrong user name or password."
    # After the five free failures the waits double from 1 s to the 300 s cap, so the 25 tries
    # after them take over an hour (failures older than the hour's window stop counting).
    waits = [w.total_seconds() for w in waits if w is not None]
    assert waits[:9] == [2.0 ** k for k in range(9)] and max(waits) == 300
    assert (clock.t - T0).total_seconds() > 3600
    # The admin signs in at once from another address, and so from the attacker's if right.
    assert acc.sign_in("adam", "adam-secret-123", "198.51.100.1").principal.username == "adam"


def test_nobody_can_lock_a_user_out(accounts):
    acc, clock = accounts
    assert acc.sign_in("adam", "adam-secret-123", "198.51.100.1")  # adam's usual address
    # A botnet: 40 addresses, each guessing adam's password twice (under the per-address limit).
    for i in range(80):
        clock.tick(0.5)
        with pytest.raises(SignInError):
            acc.sign_in("adam", "guess", f"192.0.2.{i % 40}")
    # From a new address the name is throttled, but only briefly (the 30 s cap) ...
    with pytest.raises(SignInError, match="Try again in (\\d|[12]\\d|30) seconds?\\.") as refused:
        acc.sign_in("adam", "adam-secret-123", "203.0.113.99")
    assert refused.value.retry_after <= timedelta(seconds=30)
    # ... and from his usual address not at all.
    assert acc.sign_in("adam", "adam-secret-123", "198.51.100.1").principal.username == "adam"
    clock.tick(30)
    assert acc.sign_in("adam", "adam-secret-123", "203.0.113.99").principal.username == "adam"


def test_the_botnet_gets_one_guess_per_name_per_cap(accounts):
    acc, clock = accounts
    tries = 0
    for i in range(400):  # one try a second from ever new addresses, for 400 s
        clock.tick(1)
        try:
            acc.sign_in("adam", "guess", f"192.0.2.{i % 250}")
        except SignInError as exc:
            tries += exc.retry_after is None
    # 10 free, then 1, 2, 4, 8, 16 s, then one per 30 s.
    assert 10 + 5 <= tries <= 10 + 5 + 400 // 30 + 1


def test_unknown_user_names_are_stored_as_keyed_hashes(accounts):
    acc, clock = accounts
    typed = "correct horse battery staple"  # a password typed into the name field
    _fail(acc, typed, "203.0.113.7")
    _fail(acc, "adam", "203.0.113.7")
    db = acc.db
    stored = [u for (u,) in db.rows("SELECT username FROM signin_attempts ORDER BY id")]
    audit = [u for (u,) in db.rows("SELECT username FROM audit_log WHERE action = 'signin_failed' "
                                    "ORDER BY id")]
    dump = repr(db.rows("SELECT * FROM signin_attempts")) + repr(db.rows("SELECT * FROM audit_log"))
    assert typed not in dump and "horse" not in dump
    assert stored[0].startswith("?") and len(stored[0]) == 33 and stored[1] == "adam"
    assert audit == stored
    # Keyed: the same name, the same key, the same stand-in (so the per-name limit still counts
    # it across replicas); another key, another one.
    assert acc._unknown_name(typed) == stored[0]
    other = Accounts(db, ViewerSettings(signin_key="another-key"), clock)
    assert other._unknown_name(typed) != stored[0]


def test_the_sign_in_form_throttles_by_address_not_by_name(hostile, env, monkeypatch):
    """Through the page: AppTest has no client address, so its tries count as this machine's."""
    monkeypatch.setenv("SHEMS_UI_SIGNIN_FIRST_DELAY_S", "30")  # a slow machine's next try is still inside it
    db = Database(hostile, migrate=False)
    db.execute("DELETE FROM signin_attempts")
    try:
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        for i in range(5):
            at.text_input(key="signin_user").input(f"nobody{i}")
            at.text_input(key="signin_password").input("wrong-password")
            at.button[0].click().run()
            assert at.error[0].value == md_escape("Wrong user name or password.")
        at.text_input(key="signin_user").input("olga")
        at.text_input(key="signin_password").input("olga-secret-12")
        at.button[0].click().run()
        assert rendered_text(at.error[0].value).startswith("Too many failed sign-ins. Try again in")
        clients = {c for (c,) in db.rows("SELECT client FROM signin_attempts")}
        assert clients == {LOCAL_CLIENT}
    finally:
        db.execute("DELETE FROM signin_attempts")
        db.close()


# ------------------------------------------------------------------------------ broker down

def test_a_command_with_the_broker_down_says_so_without_a_traceback(hostile, monkeypatch):
    refused = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    apply_env(monkeypatch, viewer_env(hostile, SHEMS_MQTT_URL=refused))
    at = page(hostile, "hana", HOSTILE_PASSWORD, "views/devices.py")
    at.selectbox(key="control_device").set_value(HOSTILE_DEVICES[0])
    at.button(key="control_off").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [rendered_text(e.value) for e in at.error]
    assert any(e.startswith("Could not reach the message broker: ") and "refused" in e
               for e in errors), errors
    assert "last_command" not in at.session_state
    db = Database(hostile, migrate=False)
    try:
        (failed,) = db.rows("SELECT detail FROM audit_log WHERE action = 'command_failed'")[0]
        assert "refused" in failed
    finally:
        db.close()


# ------------------------------------------------------------------------------ XSRF, real server

@pytest.fixture(scope="module")
def server(hostile):
    srv = ViewerServer(hostile, {"SHEMS_UI_STALE_AFTER_S": "600"})
    srv.wait_healthy()
    yield srv
    srv.stop()


def _request(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def test_uploads_without_the_xsrf_token_are_refused(server):
    status, headers, _ = _request(f"{server.url}/_stcore/health")
    assert status == 200
    cookie = headers["set-cookie"] if "set-cookie" in headers else headers["Set-Cookie"]
    xsrf = re.search(r"_streamlit_xsrf=([^;]+)", cookie).group(1)
    boundary = "shemsboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n=cmd\r\n--{boundary}--\r\n").encode()
    form = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    upload = f"{server.url}/_stcore/upload_file/some-session/some-file"
    # No token at all, a cookie without the header, a header from another cookie: refused.
    for extra in ({}, {"Cookie": f"_streamlit_xsrf={xsrf}"},
                  {"X-Xsrftoken": "2|00000000|00000000000000000000000000000000|1"}):
        status, _, text = _request(upload, "PUT", {**form, **extra}, body)
        assert (status, "XSRF token missing or invalid" in text) == (403, True), (extra, status, text)
    # With the pair a page of the viewer would send, the XSRF check passes and the request fails
    # for its next reason (no such session): so the 403s above were the XSRF check.
    status, _, text = _request(upload, "PUT", {**form, "Cookie": f"_streamlit_xsrf={xsrf}",
                                               "X-Xsrftoken": xsrf}, body)
    assert status == 400 and "Invalid session_id" in text, (status, text)


def test_a_websocket_from_another_origin_is_refused(server):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    stream = f"ws://127.0.0.1:{server.port}/_stcore/stream"
    with connect(stream, origin=server.url, open_timeout=30) as ws:  # the viewer's own page
        assert ws.protocol.state.name == "OPEN"
    with pytest.raises((InvalidStatus, ConnectionClosed)) as refused:
        with connect(stream, origin="https://evil.example", open_timeout=30) as ws:
            ws.recv(timeout=10)
    text = str(refused.value)
    assert "403" in text or "1008" in text, text
