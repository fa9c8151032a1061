"""The Fleet page's queries on a fleet of 2,000 homes (10,000 devices) in SQLite and PostgreSQL:
paging, search and the fleet's totals return the right homes and counts, checked against the
seeded rows recomputed with polars. Correctness only; how fast they are is
``tests/bench/bench_viewer.py --fleet``."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import PG_ADMIN_URL, _unique
from tests.fleet_seed import ANOMALY_EVERY, NO_METER_EVERY, STALE_EVERY, frames, home_id, seed_fleet
from tests.viewer_seed import APP, apply_env, viewer_env
from ui import data
from ui.accounts import Accounts
from ui.auth import AccessDenied
from ui.db import Database

HOMES = 2000
HOURS = 1.0
STALE_AFTER_S = 600.0
SILENT_AFTER_S = 600.0
ALL = [home_id(i) for i in range(HOMES)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fleet_store(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fleet') / 'fleet.db'}"
        yield seed_fleet(url, HOMES, HOURS)
        st.cache_resource.clear()
        return
    name = _unique("shems_fleet")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    yield seed_fleet(url, HOMES, HOURS)
    st.cache_resource.clear()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def expected(fleet_store) -> dict[str, pl.DataFrame]:
    return frames(HOMES, HOURS, fleet_store.now)


@pytest.fixture
def ctx(fleet_store):
    db = Database(fleet_store.url)
    accounts = Accounts(db)
    yield db, accounts.principal("olga"), accounts.principal("alice")
    db.close()


def _today(expected: dict[str, pl.DataFrame], now) -> dict[str, float]:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day = expected["home_1m"].filter(pl.col("bucket") >= midnight)
    kwh = dict(day.group_by("home_id").agg(pl.col("energy_wh").sum() / 1000).iter_rows())
    return {h: kwh.get(h, 0.0) for h in ALL}


def test_paging_by_home_id_visits_every_home_once(fleet_store, ctx):
    db, olga, _ = ctx
    seen: list[str] = []
    page = 0
    while True:
        got = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, page=page, page_size=300,
                               order="home_id")
        assert got.total == HOMES and got.pages == 7 and got.page == page
        seen += got.rows["home_id"].to_list()
        if page == got.pages - 1:
            assert got.rows.height == HOMES - 6 * 300
            break
        assert got.rows.height == 300
        page += 1
    assert seen == ALL
    # A page past the end shows the last one.
    last = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, page=99, page_size=300,
                            order="home_id")
    assert last.page == 6 and last.rows["home_id"].to_list() == ALL[1800:]


def test_pages_by_energy_today_match_the_seeded_minutes(fleet_store, ctx, expected):
    db, olga, _ = ctx
    today = _today(expected, fleet_store.now)
    ranked = sorted(ALL, key=lambda h: (-round(today[h], 9), h))
    for page in (0, 3):
        got = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, page=page, page_size=50)
        kwh = dict(got.rows.select("home_id", "today_kwh").iter_rows())
        assert list(kwh) == ranked[page * 50:(page + 1) * 50]
        for h, v in kwh.items():
            assert v == pytest.approx(today[h], rel=1e-9, abs=1e-9), h
    rows = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, page_size=100,
                            order="home_id").rows
    # Stale homes are not fresh and have no power now; a fresh home's power is its meter's newest
    # reading (or, without a meter, the sum of its devices').
    readings = expected["readings"]
    newest = readings.filter(pl.col("ts") == pl.col("ts").max().over("home_id", "device_id"))
    has_meter = pl.col("device_id").eq("mains").any().over("home_id")
    power = dict(newest.filter(~has_meter | (pl.col("device_id") == "mains"))
                 .group_by("home_id").agg(pl.col("power_w").sum()).iter_rows())
    for h, w, fresh, anomalies in rows.select("home_id", "power_w", "fresh",
                                              "open_anomalies").iter_rows():
        i = int(h.split("-")[1])
        assert fresh == (i % STALE_EVERY != 0), h
        assert w == pytest.approx(power[h] if fresh else 0.0), h
        assert anomalies == (1 if i % ANOMALY_EVERY == 0 else 0), h


@pytest.mark.parametrize("search, match", [
    ("fleet-0004", lambda h: "fleet-0004" in h),
    ("  FLEET-0123  ", lambda h: "fleet-0123" in h),  # trimmed, any case
    ("ev_charger", lambda h: int(h.split("-")[1]) % NO_METER_EVERY == 0),  # a device id
    ("mains", lambda h: int(h.split("-")[1]) % NO_METER_EVERY != 0),
    # LIKE's wildcards are literal: "_" would match the "-" of every id, "%" everything.
    ("fleet_0", lambda h: False),
    ("%", lambda h: False),
    ("!", lambda h: False),
    ("' OR '1'='1", lambda h: False),
])
def test_search_finds_homes_by_home_or_device_id(fleet_store, ctx, search, match):
    db, olga, _ = ctx
    want = [h for h in ALL if match(h)]
    got = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, search=search, page_size=100,
                           order="home_id")
    assert got.total == len(want)
    assert got.rows["home_id"].to_list() == want[:100]
    if len(want) > 100:
        second = data.fleet_homes(db, olga, fleet_store.now, STALE_AFTER_S, search=search,
                                  page=1, page_size=100, order="home_id")
        assert second.rows["home_id"].to_list() == want[100:200]


def test_fleet_totals_are_aggregates_of_every_home(fleet_store, ctx, expected):
    db, olga, _ = ctx
    f = data.fleet(db, olga, fleet_store.now, STALE_AFTER_S, SILENT_AFTER_S)
    stale = [h for h in ALL if int(h.split("-")[1]) % STALE_EVERY == 0]
    assert f.homes_total == HOMES and f.homes_fresh == HOMES - len(stale)
    assert f.homes_with_open_anomalies == len(range(0, HOMES, ANOMALY_EVERY))
    assert f.anomalies.height == min(f.homes_with_open_anomalies, data.FLEET_LIST_LIMIT)
    silent = [h for h in stale if int(h.split("-")[1]) % NO_METER_EVERY != 0]
    assert f.silent_meters_total == len(silent)
    assert f.silent_meters["home_id"].to_list() == silent[:data.FLEET_LIST_LIMIT]
    assert set(f.silent_meters["device_id"]) == {"mains"}
    readings = expected["readings"]
    newest = readings.filter(pl.col("ts") == pl.col("ts").max().over("home_id", "device_id"))
    has_meter = pl.col("device_id").eq("mains").any().over("home_id")
    fresh = newest.filter(~pl.col("home_id").is_in(stale)
                          & (~has_meter | (pl.col("device_id") == "mains")))
    assert f.demand_w == pytest.approx(fresh["power_w"].sum())
    since = fleet_store.now - timedelta(hours=24)
    demand = (expected["home_1m"].filter(pl.col("bucket") >= since)
              .group_by(pl.col("bucket").dt.truncate("15m"))
              .agg(pl.col("mean_power_w").sum() / 15).sort("bucket"))
    assert f.demand["bucket"].to_list() == demand["bucket"].to_list()
    assert f.demand["power_w"].to_list() == pytest.approx(demand["mean_power_w"].to_list())
    assert f.forecast_homes == HOMES and f.forecast.height >= 23


def test_home_choices_are_searched_and_bounded(fleet_store, ctx):
    db, olga, alice = ctx
    assert data.home_choices(db, olga) == ALL[:100]
    assert data.home_choices(db, olga, "fleet-019", limit=5) == ALL[1900:1905]
    assert data.home_choices(db, olga, "fleet_019") == []
    assert data.home_choices(db, olga, "fleet-019", limit=5, include=ALL[7]) == [ALL[7], *ALL[1900:1905]]
    assert data.home_choices(db, olga, "fleet-019", limit=5, include="nowhere") == ALL[1900:1905]
    assert data.home_choices(db, alice) == [home_id(1)]
    assert data.home_choices(db, alice, include=home_id(2)) == [home_id(1)]
    with pytest.raises(AccessDenied):
        data.fleet_homes(db, alice, fleet_store.now, STALE_AFTER_S)


def _homes_table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "kWh today" in d.value.columns]
    return table


def test_fleet_page_pages_and_searches(fleet_store, monkeypatch):
    apply_env(monkeypatch, viewer_env(fleet_store.url))
    db = Database(fleet_store.url, migrate=False)
    token = Accounts(db).sign_in("olga", "olga-secret-12").token
    db.close()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["session_token"] = token
    at.run()
    at.switch_page("views/fleet.py").run()
    assert not at.exception and not at.error, [e.value for e in list(at.exception) + list(at.error)]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Homes reporting"] == f"{HOMES - len(range(0, HOMES, STALE_EVERY))} / {HOMES}"
    assert len(at.sidebar.selectbox[0].options) == 100  # the picker lists a search's first 100
    assert len(_homes_table(at)) == 25
    at.selectbox(key="fleet_order").set_value("home id")
    at.selectbox(key="fleet_page_size").set_value(10).run()  # both go back to the first page
    assert _homes_table(at)["Home"].tolist() == ALL[:10]
    at.number_input(key="fleet_page").set_value(3).run()
    assert _homes_table(at)["Home"].tolist() == ALL[20:30]
    assert any(f"Homes 21–30 of {HOMES:,} (page 3 of 200)" in c.value for c in at.caption)
    at.text_input(key="fleet_search").input("fleet-0199").run()
    assert at.number_input(key="fleet_page").value == 1  # a new search starts at its first page
    assert _homes_table(at)["Home"].tolist() == ALL[1990:2000]
    at.sidebar.text_input(key="home_search").input("fleet-01234").run()
    # The home on show (the first, by default) stays pickable beside the matches.
    assert at.sidebar.selectbox[0].options == [home_id(0), home_id(1234)]
