"""The Bill and Energy flow pages through Streamlit's AppTest, against the viewer's seeded store
(a real REFIT slice for homeowner alice, a simulated PV-and-battery home for operator olga), with
a tariff with standing charge and VAT for the simulated home, in SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pytest
import streamlit as st

from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod
from tests.conftest import PG_ADMIN_URL, _unique
from tests.test_viewer_pages import no_failures, shown, signed_in, texts
from tests.viewer_seed import OTHER_HOME, OWN_HOME, apply_env, seed, viewer_env
from ui.auth import AccessDenied, Principal, Role
from ui.db import Database
from ui.energy import set_budget

LONDON = "Europe/London"
SIM_TARIFF = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.FLAT, "GBP", "UTC", "Solar flat",
                    import_price=0.25, export_price=0.15, standing_charge=0.60, tax_rate=0.05)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request, tmp_path_factory):
    economy7 = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.TOU, "GBP", LONDON, "Economy 7",
                      0.28, periods=(TouPeriod("night", 30, 7 * 60 + 30, 0.09),))
    book = TariffBook("GBP", (economy7,), {OTHER_HOME: (SIM_TARIFF,)})
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bill') / 'viewer.db'}"
        done = seed(url, sim_days=3.0)
        _tariffs(url, book)
        yield done
        st.cache_resource.clear()
        return
    name = _unique("shems_bill")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    done = seed(url, sim_days=3.0)
    _tariffs(url, book)
    yield done
    st.cache_resource.clear()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tariffs(url: str, book: TariffBook) -> None:
    from sinks.stores import open_store

    store = open_store(url)
    try:
        store.upsert_tariffs(book.to_rows())
    finally:
        store.close()


@pytest.fixture(autouse=True)
def env(seeded, monkeypatch):
    apply_env(monkeypatch, viewer_env(seeded.url, locale="en_GB"))


def _db(seeded) -> Database:
    return Database(seeded.url, migrate=False)


def _home_minutes(seeded, home: str, start: datetime, end: datetime) -> pl.DataFrame:
    db = _db(seeded)
    try:
        return db.frame(f"SELECT {db.us('bucket')} AS bucket, mean_power_w FROM home_1m WHERE home_id = :h "
                        "AND bucket >= :s AND bucket < :e", {"h": home, "s": start, "e": end},
                        {"bucket": pl.Datetime("us", "UTC"), "mean_power_w": pl.Float64})
    finally:
        db.close()


def _newest(seeded, home: str) -> datetime:
    db = _db(seeded)
    try:
        (us,) = db.rows(f"SELECT {db.us('max(bucket)')} FROM home_1m WHERE home_id = :h", {"h": home})[0]
    finally:
        db.close()
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(us) + 60_000_000)


def _penny(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _kwh(wh: float) -> Decimal:
    return Decimal(repr(wh / 1000)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)


def _table(at, index: int = 0) -> dict[str, tuple[str, str]]:
    """A bill table of the page (0: so far, 1: projected) as item -> (quantity, amount)."""
    frame = at.dataframe[index].value
    return {row["Item"]: (row["Quantity"], row["Amount"]) for _, row in frame.iterrows()}


def test_the_bill_so_far_has_a_standing_charge_vat_and_export_credit_to_the_penny(seeded):
    """The simulated home under a flat 25p, 60p/day standing charge, 5 % VAT, 15p export: the page's
    month so far, worked out here from the store's minutes by this test's own arithmetic."""
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/bill.py").run()
    no_failures(at)
    as_of = min(_newest(seeded, OTHER_HOME), datetime.now(timezone.utc))
    local = as_of.astimezone(timezone.utc)
    start = datetime(local.year, local.month, 1, tzinfo=timezone.utc)
    minutes = _home_minutes(seeded, OTHER_HOME, start, as_of)
    wh = minutes["mean_power_w"].to_numpy() / 60
    imported, exported = _kwh(float(wh[wh > 0].sum())), _kwh(float(-wh[wh < 0].sum()))
    days = (as_of - timedelta(microseconds=1)).day
    energy = _penny(imported * Decimal("0.25"))
    standing = _penny(days * Decimal("0.6"))
    vat = _penny((energy + standing) * Decimal("0.05"))
    credit = _penny(exported * Decimal("0.15"))
    due = energy + standing + vat - credit
    lines = _table(at)
    assert lines["Solar flat · unit rate"] == (f"{imported:,.3f} kWh", f"£{energy:,}")
    assert lines["Standing charge"] == (f"{days} day{'s' if days != 1 else ''}", f"£{standing:,}")
    assert lines["Tax at 5 %"][1] == f"£{vat:,}"
    assert lines["Total"][1] == f"£{energy + standing + vat:,}"
    if exported:
        assert lines["Solar flat · export"] == (f"{exported:,.3f} kWh", f"-£{credit:,}")
    metrics = {m.label: m.value for m in at.metric}
    so_far = next(v for k, v in metrics.items() if k.startswith("So far"))
    assert so_far == (f"£{due:,}" if due >= 0 else f"-£{-due:,}")  # a sunny month can be a credit
    assert "£" in metrics["Projected month"] and metrics["Monthly budget"] == "not set"
    text = texts(at)
    assert "standing charge 0.6 GBP/day, tax 5.0%" in text
    assert "Projected from the home's forecasts for the next" in text  # the seed's 24 hourly forecasts
    # by device: the simulated appliances, the EV/unmetered rest; never the PV or the battery
    devices = set(at.dataframe[2].value["Device"])
    assert {"fridge", "kettle"} <= devices and not devices & {"pv", "battery", "mains"}
    # operators see the budget but do not set it
    assert not at.get("form") or not at.number_input
    assert "The household sets its budget" in text


def test_the_homeowner_sets_a_budget_and_sees_the_alert_then_removes_it(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/bill.py").run()
    no_failures(at)
    assert {m.label: m.value for m in at.metric}["Monthly budget"] == "not set"
    # Economy 7 without standing charge or tax: energy lines only, in pounds and pence
    lines = _table(at)
    assert set(lines) <= {"Economy 7 · night", "Economy 7 · standard rate", "Charges", "Total"}
    assert lines["Total"][1].startswith("£")
    at.number_input(key="budget_amount").set_value(0.01)
    at.button[[b.label for b in at.button].index("Save budget")].click().run()
    assert not at.exception  # the alert is an error (already over) or a warning (projected over)
    assert {m.label: m.value for m in at.metric}["Monthly budget"] == "£0.01"
    alert = [shown(w.value) for w in at.warning] + [shown(e.value) for e in at.error]
    assert len(alert) == 1 and "over the budget of £0.01" in alert[0]
    db = _db(seeded)
    try:
        (amount, currency, by), = db.rows("SELECT amount, currency, set_by FROM budgets WHERE home_id = :h",
                                          {"h": OWN_HOME})
        audit = db.rows("SELECT action, detail FROM audit_log WHERE home_id = :h AND action LIKE :a",
                        {"h": OWN_HOME, "a": "budget%"})
    finally:
        db.close()
    assert (Decimal(str(amount)), currency, by) == (Decimal("0.01"), "GBP", "alice")
    assert ("budget_set", "0.01 GBP a month") in audit
    # a generous budget: within it
    at.number_input(key="budget_amount").set_value(100000.0)
    at.button[[b.label for b in at.button].index("Save budget")].click().run()
    assert any("within the budget of £100,000.00" in shown(s.value) for s in at.success)
    at.button[[b.label for b in at.button].index("Remove budget")].click().run()
    no_failures(at)
    assert {m.label: m.value for m in at.metric}["Monthly budget"] == "not set"


def test_budget_alerts_lists_the_homes_over_budget_for_a_notifier(seeded):
    from ui.accounts import Accounts
    from ui.cost import load_pricing
    from ui.energy import budget_alerts
    from ui.settings import load_settings

    now = datetime.now(timezone.utc)
    db = _db(seeded)
    try:
        alice = Principal("alice", Role.HOMEOWNER, frozenset({OWN_HOME}))
        pricing = load_pricing(db, load_settings())
        assert budget_alerts(db, pricing, LONDON, now) == []  # no budget, no alert
        set_budget(db, Accounts(db), alice, OWN_HOME, Decimal("0.01"), "GBP", now)
        (alert,) = budget_alerts(db, pricing, LONDON, now)
        assert (alert.home_id, alert.budget, alert.currency) == (OWN_HOME, 0.01, "GBP")
        assert alert.projected > 0.01 and "over the budget of £0.01" in alert.message
        set_budget(db, Accounts(db), alice, OWN_HOME, Decimal("100000"), "GBP", now)
        assert budget_alerts(db, pricing, LONDON, now) == []
        set_budget(db, Accounts(db), alice, OWN_HOME, None, "GBP", now)
    finally:
        db.close()


def test_only_the_household_may_set_its_budget(seeded):
    db = _db(seeded)
    try:
        from ui.accounts import Accounts

        operator = Principal("olga", Role.OPERATOR, frozenset())
        with pytest.raises(AccessDenied, match="Only the household"):
            set_budget(db, Accounts(db), operator, OWN_HOME, Decimal("50"), "GBP", datetime.now(timezone.utc))
        stranger = Principal("alice", Role.HOMEOWNER, frozenset({OWN_HOME}))
        with pytest.raises(AccessDenied):
            set_budget(db, Accounts(db), stranger, OTHER_HOME, Decimal("50"), "GBP", datetime.now(timezone.utc))
        assert not db.rows("SELECT * FROM budgets WHERE home_id = :h", {"h": OTHER_HOME})
    finally:
        db.close()


def test_money_follows_the_locale(seeded, monkeypatch):
    apply_env(monkeypatch, viewer_env(seeded.url, locale="de_DE"))
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/bill.py").run()
    no_failures(at)
    so_far = next(m.value for m in at.metric if m.label.startswith("So far"))
    assert so_far.endswith("\xa0£") and "," in so_far


def test_energy_flow_sankey_of_the_pv_and_battery_home_balances_and_matches_the_store(seeded):
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/flow.py").run()
    no_failures(at)
    # opens on the day of the newest reading; pick the day before (a whole day of sun)
    day = (_newest(seeded, OTHER_HOME) - timedelta(days=1)).date()
    at.date_input(key="flow_day").set_value(day).run()
    no_failures(at)
    (chart,) = at.get("plotly_chart")
    sankey = json.loads(chart.proto.spec)["data"][0]
    values = sankey["link"]["value"]
    labels = sankey["node"]["label"]
    assert any(label.startswith("Solar") for label in labels)
    assert any(label.startswith("Battery charge") for label in labels)
    assert any(label.startswith("Battery discharge") for label in labels)
    # the balance on the page: what leaves the sources is what reaches the sinks
    sources = [i for i, label in enumerate(labels) if label.split(" ")[0] in ("Solar", "Grid") and
               not label.startswith("Grid export") or label.startswith("Battery discharge")]
    out = sum(v for s, v in zip(sankey["link"]["source"], values) if s in sources)
    into = sum(v for t, v in zip(sankey["link"]["target"], values) if t not in sources)
    assert out == pytest.approx(into, abs=1e-9) and out == pytest.approx(sum(values))
    # solar as the PV meter measured it that day, from the store's minutes
    db = _db(seeded)
    try:
        start = datetime.combine(day, datetime.min.time(), ZoneInfo("UTC"))
        (pv_wh,) = db.rows("SELECT -sum(mean_power_w) / 60.0 FROM device_1m WHERE home_id = :h "
                           "AND device_id = 'pv' AND bucket >= :s AND bucket < :e",
                           {"h": OTHER_HOME, "s": start, "e": start + timedelta(days=1)})[0]
    finally:
        db.close()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Solar"] == f"{float(pv_wh) / 1000:,.1f} kWh"
    for ratio in ("Self-consumption", "Self-sufficiency"):
        assert metrics[ratio].endswith("%") and 0 <= int(metrics[ratio][:-1]) <= 100
    assert at.radio(key="flow_period").options == ["Day", "Week", "Month", "Year"]
    at.radio(key="flow_period").set_value("Month").run()
    no_failures(at)
    assert len(at.get("plotly_chart")) == 1


def test_energy_flow_of_a_home_without_solar_says_so(seeded):
    at = signed_in(seeded.url, "alice")
    at.switch_page("views/flow.py").run()
    no_failures(at)
    assert any("no solar panels, battery or EV" in shown(i.value) for i in at.info)
    assert len(at.get("plotly_chart")) == 1


def test_shems_bill_prints_the_page_s_numbers_and_refuses_an_unknown_home_in_one_line(seeded):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "SHEMS_UI_LOCALE": "en_GB"}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "bill", "--store-url", seeded.url,
                          "--home", OTHER_HOME], cwd=root, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    at = signed_in(seeded.url, "olga", home=OTHER_HOME)
    at.switch_page("views/bill.py").run()
    page = _table(at)
    printed = out.stdout.splitlines()
    total = next(line for line in printed if line.strip().startswith("Total"))
    assert total.split()[-1] == page["Total"][1]
    assert any(line.strip().startswith("Standing charge") for line in printed)
    assert "No monthly budget set" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "bill", "--store-url", seeded.url,
                          "--home", "nobody"], cwd=root, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("shems: error: no readings of home 'nobody'")
