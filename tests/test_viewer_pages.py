"""Every page of the viewer through Streamlit's AppTest, for a homeowner, an operator and an admin,
against a store filled through the real import path, in SQLite and in PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests import reference
from tests.conftest import PG_ADMIN_URL, _unique
from tests.viewer_seed import (
    APP,
    OTHER_ANOMALY,
    OTHER_HOME,
    OTHER_RECOMMENDATION,
    OWN_HOME,
    PASSWORDS,
    apply_env,
    refit_readings,
    seed,
    viewer_env,
)
from ui.accounts import Accounts
from ui.db import Database

HOME_PAGES = ["views/live.py", "views/history.py", "views/forecast.py", "views/alerts.py",
              "views/devices.py", "views/bill.py", "views/flow.py"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('viewer') / 'viewer.db'}"
        yield seed(url)
        st.cache_resource.clear()
        return
    name = _unique("shems_viewer")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    yield seed(url)
    st.cache_resource.clear()  # closes the viewer's pool before the database goes
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def env(seeded, monkeypatch):
    apply_env(monkeypatch, viewer_env(seeded.url))


_TOKENS: dict[tuple[str, str], str] = {}


def token(url: str, user: str, fresh: bool = False) -> str:
    """A session token; one per user and store unless ``fresh`` (Argon2 takes ~0.4 s a sign-in)."""
    if fresh or (url, user) not in _TOKENS:
        db = Database(url, migrate=False)
        try:
            new = Accounts(db).sign_in(user, PASSWORDS[user]).token
        finally:
            db.close()
        if fresh:
            return new  # the test may end it; later tests keep the shared one
        _TOKENS[(url, user)] = new
    return _TOKENS[(url, user)]


def signed_in(url: str, user: str, fresh: bool = False, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["session_token"] = token(url, user, fresh)
    at.query_params.update(query)
    return at.run()


def shown(markdown: str) -> str:
    """What a person reads from Markdown the viewer escaped (``ui.safe.md_escape``)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def texts(at: AppTest) -> str:
    """Everything a person could read on the page, as one string."""
    parts = [e.value for kind in ("title", "subheader", "markdown", "caption", "info", "warning",
                                  "error", "success") for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [d.value.to_string() for d in at.dataframe]
    return shown("\n".join(str(p) for p in parts))


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def no_failures(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ------------------------------------------------------------------------------------ sign-in

def test_sign_in_form_refuses_a_wrong_password_and_opens_the_live_page(seeded, forget_failures):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert shown(at.title[0].value) == "shems · sign in"
    at.text_input(key="signin_user").input("alice")
    at.text_input(key="signin_password").input("not-the-password")
    at.button[0].click().run()
    assert shown(at.error[0].value) == "Wrong user name or password."
    assert not at.metric
    at.text_input(key="signin_password").input(PASSWORDS["alice"])
    at.button[0].click().run()
    no_failures(at)
    assert shown(at.title[0].value) == f"Live · {OWN_HOME}"
    assert at.metric[0].label == "Power now"


@pytest.fixture
def forget_failures(seeded):
    """AppTest has no client address: every test's failures count for the same one."""
    db = Database(seeded.url, migrate=False)
    try:
        db.execute("DELETE FROM signin_attempts WHERE ok = :f", {"f": False})
        yield
        db.execute("DELETE FROM signin_attempts WHERE ok = :f", {"f": False})
    finally:
        db.close()


def test_sign_in_is_slowed_after_five_failures_then_opens_again(seeded, forget_failures, monkeypatch):
    # A first wait of 8 s, not 1 s: on a busy machine one sign-in through the page (Argon2)
    # has taken over a second, and the wait would be over before the next try.
    monkeypatch.setenv("SHEMS_UI_SIGNIN_FIRST_DELAY_S", "8")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.text_input(key="signin_user").input("olga")
    for _ in range(5):
        at.text_input(key="signin_password").input("wrong-password")
        at.button[0].click().run()
        assert shown(at.error[0].value) == "Wrong user name or password."
    at.text_input(key="signin_password").input(PASSWORDS["olga"])
    at.button[0].click().run()
    message = shown(at.error[0].value)
    wait = re.fullmatch(r"Too many failed sign-ins\. Try again in (\d) seconds?\.", message)
    assert wait and 1 <= int(wait[1]) <= 8, message
    assert shown(at.title[0].value) == "shems · sign in"
    # A wait, not a lockout: once it is over the right password opens the page.
    time.sleep(int(wait[1]) + 0.1)
    at.button[0].click().run()
    assert shown(at.title[0].value).startswith("Live · ")


def test_an_expired_session_returns_to_sign_in(seeded):
    at = signed_in(seeded.url, "alice", fresh=True)
    assert shown(at.title[0].value) == f"Live · {OWN_HOME}"
    # 31 minutes without a page view: past the 30-minute idle limit.
    db = Database(seeded.url, migrate=False)
    try:
        db.execute("UPDATE sessions SET last_seen = :t WHERE token_hash = :h",
                   {"t": seeded.now - timedelta(minutes=31),
                    "h": hashlib.sha256(at.session_state["session_token"].encode()).hexdigest()})
    finally:
        db.close()
    at.run()
    assert shown(at.title[0].value) == "shems · sign in"
    assert shown(at.warning[0].value) == "Your session expired. Please sign in again."
    assert "session_token" not in at.session_state


def test_sign_out_ends_the_session(seeded):
    at = signed_in(seeded.url, "alice", fresh=True)
    token = at.session_state["session_token"]
    at.sidebar.button[0].click().run()
    assert shown(at.title[0].value) == "shems · sign in"
    db = Database(seeded.url, migrate=False)
    try:
        with pytest.raises(Exception, match="ended"):
            Accounts(db).resume(token)
    finally:
        db.close()


# ------------------------------------------------------------------------------------ homeowner

@pytest.mark.parametrize("page", HOME_PAGES)
def test_every_home_page_renders_for_the_homeowner(seeded, page):
    at = signed_in(seeded.url, "alice")
    at.switch_page(page).run()
    no_failures(at)
    assert shown(at.title[0].value).endswith(f"· {OWN_HOME}")
    text = texts(at)
    assert OTHER_HOME not in text and OTHER_ANOMALY not in text


def test_homeowner_navigation_has_no_fleet_or_users_page(seeded):
    at = signed_in(seeded.url, "alice")
    for page in ("views/fleet.py", "views/users.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)
    assert at.sidebar.selectbox[0].options == [OWN_HOME]


@pytest.mark.parametrize("page", HOME_PAGES)
def test_a_homeowner_asking_for_another_home_gets_an_error_and_none_of_its_data(seeded, page):
    at = signed_in(seeded.url, "alice")
    at.switch_page(page)
    at.query_params["home"] = OTHER_HOME
    at.run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == [f"You do not have access to home '{OTHER_HOME}'."]
    assert not at.metric and not at.dataframe and not charts(at)
    text = texts(at)
    assert OTHER_ANOMALY not in text and OTHER_RECOMMENDATION not in text
    # Back to her own home the page works again.
    at.query_params["home"] = OWN_HOME
    at.run()
    no_failures(at)


def test_live_page_shows_power_today_and_that_the_data_is_stale(seeded):
    at = signed_in(seeded.url, "alice")
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Power now"].endswith(" W") and metrics["Power now"] != "—"
    assert metrics["Today so far"].endswith(" kWh")
    assert metrics["Cost today"].startswith("£")
    # The REFIT slice ends 20 minutes before the seed: stale against a 10-minute limit.
    assert shown(at.warning[0].value).startswith("Stale data: the newest reading is from 2")
    devices = at.dataframe[0].value
    assert {"mains", "kettle"} <= set(devices["Device"])
    assert not devices["Energy today (kWh)"].isna().any()  # a device idle since midnight shows 0, not blank
    # The unmetered band is a row only once the home used energy today (not so just after
    # midnight, as the seeded slice ends 20 minutes before the seed).
    tz = home_timezone_of(seeded, OWN_HOME)
    midnight = datetime.combine(datetime.now(timezone.utc).astimezone(ZoneInfo(tz)).date(),
                                datetime.min.time(), ZoneInfo(tz)).astimezone(timezone.utc)
    used_today = refit_minutes(seeded).filter(pl.col("bucket") >= midnight).height > 0
    assert ("unmetered" in set(devices["Device"])) == used_today
    assert len(charts(at)) == 2


def test_live_page_of_a_fresh_home_is_not_stale(seeded):
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    no_failures(at)
    assert not [w for w in at.warning if w.value.startswith("Stale")]


def test_history_shows_bands_with_unmetered_costs_and_comparison(seeded):
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/history.py").run()
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Energy"].endswith(" kWh") and metrics["Cost"].startswith("£")
    assert "prices: the store's tariffs (1)" in texts(at)
    assert metrics["Base load"].endswith(" W") and metrics["Base load"] != "—"
    top = at.dataframe[0].value
    assert "unmetered" in set(top["Device"]) and "mains" not in set(top["Device"])
    assert abs(top["Share of energy (%)"].sum() - 100) < 0.5
    # Two days of data and none the week before: no comparison, and the page says why.
    assert len(charts(at)) == 4  # usage, cost, two heat maps
    assert "No comparison: the previous period has data for 0% of its time" in texts(at)
    assert "vs previous" not in texts(at)
    assert [b.proto.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]
    # A day at a time at 1-minute resolution.
    at.date_input(key=f"history_range_{OTHER_HOME}").set_value((seeded.now.date(), seeded.now.date()))
    at.selectbox(key="history_resolution").set_value("1 min").run()
    no_failures(at)
    assert "Resolution 1 min" in texts(at)


def test_history_one_click_periods_end_on_the_newest_day(seeded):
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/history.py").run()
    today = at.date_input(key=f"history_range_{OTHER_HOME}").value[1]
    at.button_group(key=f"history_period_{OTHER_HOME}").set_value("Month").run()
    no_failures(at)
    assert at.date_input(key=f"history_range_{OTHER_HOME}").value == (today.replace(day=1), today)
    at.button_group(key=f"history_period_{OTHER_HOME}").set_value("Day").run()
    assert at.date_input(key=f"history_range_{OTHER_HOME}").value == (today, today)
    assert "Resolution 1 min" in texts(at)


def test_history_coarsens_a_resolution_too_fine_for_the_range(seeded):
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/history.py").run()
    at.selectbox(key="history_resolution").set_value("1 min").run()
    no_failures(at)
    assert "1 min over this range would draw" in shown(at.info[0].value)


def test_forecast_page_shows_forecast_actual_and_errors(seeded):
    # The homeowner: the forecast in plain words, no model name, no error table.
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/forecast.py").run()
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert "Recent error (all horizons)" not in metrics and metrics["Off by so far"]
    assert len(charts(at)) == 1 and not at.dataframe
    assert "test-model" not in texts(at) and "shaded band" in texts(at)
    # The operator: the model, its errors by horizon and the baselines.
    at = signed_in(seeded.url, "olga", home=OWN_HOME)
    at.switch_page("views/forecast.py").run()
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Recent error (all horizons)"].endswith(" W")
    assert len(charts(at)) == 2
    scores = at.dataframe[0].value
    assert len(scores) == 24 and scores["Model"].iloc[0] == "test-model"


def test_alerts_accept_and_dismiss_persist(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/alerts.py").run()
    no_failures(at)
    assert "The kettle has been on for 20 minutes" in shown(at.warning[-1].value)
    at.button(key="accept_0").click().run()
    no_failures(at)
    db = Database(seeded.url, migrate=False)
    try:
        rows = db.rows("SELECT status, status_changed_by FROM recommendations WHERE home_id = :h",
                       {"h": OWN_HOME})
        assert rows == [("accepted", "alice")]
        assert "Accepted by alice" in texts(at)
        at.button(key="dismiss_0").click().run()
        rows = db.rows("SELECT status FROM recommendations WHERE home_id = :h", {"h": OWN_HOME})
        assert rows == [("dismissed",)]
        audit = db.rows("SELECT action FROM audit_log WHERE username = 'alice' AND home_id = :h "
                        "ORDER BY id", {"h": OWN_HOME})
        assert [a for (a,) in audit][-2:] == ["recommendation_accepted", "recommendation_dismissed"]
        # An alert acknowledged stays acknowledged, with who did it.
        at.button(key="ack_0").click().run()
        no_failures(at)
        assert db.rows("SELECT device_id, acknowledged_by FROM anomaly_acks WHERE home_id = :h",
                       {"h": OWN_HOME}) == [("kettle", "alice")]
        assert "Acknowledged by alice" in texts(at)
    finally:
        db.execute("UPDATE recommendations SET status = 'new'")
        db.execute("DELETE FROM anomaly_acks")
        db.close()


def test_devices_page_lists_switchable_devices(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/devices.py").run()
    no_failures(at)
    # Named as on every other page; the command still goes to the device id.
    assert set(at.selectbox(key="control_device").options) == {
        "kettle", "dishwasher", "washing machine", "microwave"}
    assert at.selectbox(key="control_device").value in {"kettle", "dishwasher", "washing_machine", "microwave"}
    assert at.button(key="control_off") and at.button(key="control_on")


# ------------------------------------------------------------------------------------ operator

@pytest.mark.parametrize("page", HOME_PAGES)
def test_every_home_page_renders_for_the_operator_on_any_home(seeded, page):
    for home in (OWN_HOME, OTHER_HOME):
        at = signed_in(seeded.url, "olga", home=home)
        at.switch_page(page).run()
        no_failures(at)
        assert shown(at.title[0].value).endswith(f"· {home}")


def test_operator_sees_the_fleet(seeded):
    at = signed_in(seeded.url, "olga")
    at.switch_page("views/fleet.py").run()
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Homes reporting"] == "1 / 2"  # the REFIT slice is 20 minutes old
    assert metrics["Homes with open anomalies"] == "2"
    assert float(metrics["Ingest (readings/s)"].replace(",", "")) >= 0
    text = texts(at)
    assert OWN_HOME in text and OTHER_HOME in text
    assert len(charts(at)) == 1
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("views/users.py")


def test_operator_cannot_decide_a_households_recommendation(seeded):
    at = signed_in(seeded.url, "olga", home=OWN_HOME)
    at.switch_page("views/alerts.py").run()
    no_failures(at)
    assert not at.main.button
    assert "Only the household decides on its recommendations." in texts(at)


# ------------------------------------------------------------------------------------ admin

def test_admin_manages_users_and_reads_the_audit_log(seeded):
    at = signed_in(seeded.url, "adam")
    at.switch_page("views/users.py").run()
    no_failures(at)
    users = at.dataframe[0].value
    assert {"alice", "olga", "adam"} <= set(users["user"])
    at.text_input(key="add_name").input("hugo")
    at.selectbox(key="add_role").set_value("homeowner")
    at.multiselect(key="add_homes").set_value([OTHER_HOME])
    at.text_input(key="add_password").input("hugo-password-1")
    at.button[0].click().run()
    no_failures(at)
    assert "hugo" in set(at.dataframe[0].value["user"])
    log = at.dataframe[1].value
    assert "user_add" in set(log["action"])
    db = Database(seeded.url, migrate=False)
    try:
        assert Accounts(db).principal("hugo").homes == frozenset({OTHER_HOME})
        Accounts(db).remove_user("hugo", by="test")
    finally:
        db.close()


@pytest.mark.parametrize("page", HOME_PAGES + ["views/fleet.py"])
def test_every_page_renders_for_the_admin(seeded, page):
    at = signed_in(seeded.url, "adam", home=OTHER_HOME)
    at.switch_page(page).run()
    no_failures(at)


# ------------------------------------------------------------------------------------ the figures
# What the pages say, against figures computed here from the seed's own readings with the
# reference windowing (tests/reference.py) and the seeded tariff (Economy 7: 0.09 GBP/kWh from
# 00:30 to 07:30 London time, else 0.28), not through the viewer's SQL.

LONDON = ZoneInfo("Europe/London")


def economy7(bucket: datetime) -> float:
    local = bucket.astimezone(LONDON)
    return 0.09 if 30 <= local.hour * 60 + local.minute < 7 * 60 + 30 else 0.28


def refit_minutes(seeded) -> pl.DataFrame:
    readings = refit_readings(seeded.now - timedelta(minutes=20))
    frame = pl.DataFrame({
        "home_id": [r.home_id for r in readings], "device_id": [r.device_id for r in readings],
        "kind": [r.kind.value for r in readings],
        "ts": pl.Series([r.ts for r in readings], dtype=pl.Datetime("us", "UTC")),
        "power_w": [r.power_w for r in readings],
        "energy_wh": pl.Series([r.energy_wh for r in readings], dtype=pl.Float64)})
    return reference.device_minutes(frame)


def home_timezone_of(seeded, home: str) -> str:
    db = Database(seeded.url, migrate=False)
    try:
        rows = db.rows("SELECT timezone FROM devices WHERE home_id = :h AND timezone IS NOT NULL "
                       "LIMIT 1", {"h": home})
    finally:
        db.close()
    return rows[0][0] if rows else "UTC"


def bands_15min(minutes: pl.DataFrame, since: datetime) -> pl.DataFrame:
    """Wh per 15-minute bucket: each sub-metered device, and the meter's remainder (never below
    zero), the viewer's definition of its bands."""
    m = minutes.filter(pl.col("bucket") >= since).with_columns(
        pl.col("bucket").dt.truncate("15m").alias("b"), (pl.col("mean_power_w") / 60).alias("wh"))
    subs = m.filter(pl.col("kind") != "meter").group_by("device_id", "b").agg(pl.col("wh").sum())
    meter = m.filter(pl.col("kind") == "meter").group_by("b").agg(pl.col("wh").sum())
    sub_sum = subs.group_by("b").agg(pl.col("wh").sum().alias("sub"))
    rest = (meter.join(sub_sum, on="b", how="left")
            .select(pl.lit("unmetered").alias("device_id"), "b",
                    (pl.col("wh") - pl.col("sub").fill_null(0)).clip(lower_bound=0).alias("wh")))
    return pl.concat([subs.select("device_id", "b", "wh"), rest])


def test_live_page_shows_the_seeded_power_energy_and_cost(seeded):
    at = signed_in(seeded.url, "alice")
    no_failures(at)
    tz = home_timezone_of(seeded, OWN_HOME)
    now = datetime.now(timezone.utc)
    local = now.astimezone(ZoneInfo(tz))
    midnight = datetime.combine(local.date(), datetime.min.time(), ZoneInfo(tz)).astimezone(timezone.utc)
    minutes = refit_minutes(seeded)
    home = reference.home_minutes(minutes).filter(pl.col("bucket") >= midnight)
    want_kwh = home["energy_wh"].sum() / 1000
    want_cost = sum(wh / 1000 * economy7(b) for b, wh in home.group_by(
        pl.col("bucket").dt.truncate("15m")).agg(pl.col("energy_wh").sum()).rows())
    readings = [r for r in refit_readings(seeded.now - timedelta(minutes=20)) if r.device_id == "mains"]
    newest = max(readings, key=lambda r: r.ts)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Power now"] == f"{newest.power_w:,.0f} W"
    assert metrics["Today so far"] == f"{want_kwh:,.2f} kWh"
    assert metrics["Cost today"] == f"£{want_cost:,.2f}"
    table = at.dataframe[0].value.set_index("Device")
    kettle = minutes.filter((pl.col("device_id") == "kettle") & (pl.col("bucket") >= midnight))
    assert table.loc["kettle", "Energy today (kWh)"] == pytest.approx(
        round(kettle["mean_power_w"].sum() / 60 / 1000, 3), abs=1e-3)


def test_history_page_shows_the_seeded_energy_cost_and_top_consumers(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/history.py").run()
    no_failures(at)
    tz = home_timezone_of(seeded, OWN_HOME)
    first = datetime.now(timezone.utc).astimezone(ZoneInfo(tz)).date() - timedelta(days=6)
    start = datetime.combine(first, datetime.min.time(), ZoneInfo(tz)).astimezone(timezone.utc)
    bands = bands_15min(refit_minutes(seeded), start)
    want_kwh = bands["wh"].sum() / 1000
    want_cost = sum(wh / 1000 * economy7(b) for _, b, wh in bands.rows())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Energy"] == f"{want_kwh:,.1f} kWh"
    assert metrics["Cost"] == f"£{want_cost:,.2f}"
    top = at.dataframe[0].value.set_index("Device")
    per_device = dict(bands.group_by("device_id").agg(pl.col("wh").sum() / 1000).rows())
    for device, kwh in per_device.items():
        assert top.loc[device.replace("_", " "), "Energy (kWh)"] == pytest.approx(round(kwh, 2), abs=0.011), device
    assert top.index[0] == max(per_device, key=per_device.get).replace("_", " ")  # ranked by energy


def test_alerts_forecast_and_fleet_show_the_seeded_counts_and_errors(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/alerts.py").run()
    # The kettle running long, and the REFIT meter quiet for 20 minutes (silent after 10).
    assert [shown(s.value) for s in at.subheader] == ["Open alerts (2)", "Earlier alerts (0)",
                                                      "Recommendations"]
    assert "mains** has sent nothing since" in texts(at)
    assert "Cut the always-on load" in texts(at)
    assert "≈ £10.10 a month · 36.0 kWh a month" in texts(at)
    at = signed_in(seeded.url, "olga", home=OWN_HOME)  # the model's errors are for operators
    at.switch_page("views/forecast.py").run()
    metrics = {m.label: m for m in at.metric}
    # 24 horizons scored on 40 slots each, MAE 90 + h W; the baseline's 130 W.
    model = sum(90.0 + h for h in range(1, 25)) / 24
    assert metrics["Recent error (all horizons)"].value == f"{model:,.0f} W"
    assert metrics["Recent error (all horizons)"].proto.delta == f"{model / 130 - 1:+.0%} vs same time yesterday"
    scores = at.dataframe[0].value
    assert scores["Model MAE (W)"].tolist() == [90.0 + h for h in range(1, 25)]
    assert scores["Hours ahead"].tolist() == list(range(1, 25))
    assert set(scores["In interval (%)"]) == {80.0}
    at = signed_in(seeded.url, "olga")
    at.switch_page("views/fleet.py").run()
    no_failures(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Homes with open anomalies"] == "2"
    assert metrics["Silent meters"] == "1"  # the REFIT meter, 20 minutes quiet
    assert metrics["Dead letters (1 h)"] == "0"
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    home = reference.home_minutes(refit_minutes(seeded)).filter(pl.col("bucket") >= midnight)
    top = at.dataframe[0].value.set_index("Home")
    assert top.loc[OWN_HOME, "kWh today"] == pytest.approx(round(home["energy_wh"].sum() / 1000, 2),
                                                           abs=0.006)
    silent = at.dataframe[-1].value
    assert silent["home_id"].tolist() == [OWN_HOME] and silent["device_id"].tolist() == ["mains"]
