"""The Fleet page's queries do not loop over homes: the statements the operator's page issues
(totals, a page of homes, the measured savings) are as many with 200 homes as with 20, and the
savings measured in batched reads equal the old one-query-per-home measurement
(``tests/savings_per_home.py``) on a seeded store, in SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest

from pipeline.energy.tariff import book_from_mapping
from pipeline.records import DeviceInfo, DeviceKind, Recommendation, Source
from pipeline.tools.savings_report import measure_db, measure_store
from sinks.base import Batch
from sinks.rows import to_us
from sinks.stores import open_store
from tests import savings_per_home
from tests.conftest import PG_ADMIN_URL, _unique
from tests.fleet_seed import seed_fleet
from ui import data
from ui.accounts import Accounts
from ui.db import Database, Transaction

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DAYS = 100  # of hourly rows per home before NOW
ZONES = ["Europe/London", "Australia/Brisbane", None]


@dataclass
class Counter:
    statements: int = 0


@pytest.fixture
def count_statements(monkeypatch) -> Counter:
    """Counts every statement the viewer's Database runs (ui.db.Transaction, which every read of
    the Fleet page and of the savings goes through)."""
    counter = Counter()
    original = Transaction._cursor

    def counted(self, sql, params):
        counter.statements += 1
        return original(self, sql, params)

    monkeypatch.setattr(Transaction, "_cursor", counted)
    return counter


def _hid(i: int) -> str:
    return f"home-{i:04d}"


def seed_savings(url: str, homes: int) -> None:
    """``homes`` homes with DAYS days of hourly use (a weekly rhythm, noise, and a 30 % cut after
    acceptance for the treated ones); every tenth home accepted home-level advice at a different
    hour, home 3 a device's advice and home 5 a load shift on its heat pump, home 7 advice a
    week ago (still measuring), and a home with no history accepted advice too."""
    rng = np.random.default_rng(homes)
    store = open_store(url)
    store.migrate()
    store.upsert_devices([DeviceInfo(_hid(i), d, k, Source.NATIVE, timezone=ZONES[i % 3])
                          for i in range(homes) for d, k in (("mains", DeviceKind.METER),
                                                             ("heat_pump", DeviceKind.APPLIANCE))])
    store.upsert_tariffs(book_from_mapping({"currency": "EUR", "timezone": "UTC", "tariff": [
        {"name": "tou", "effective_from": NOW.date() - timedelta(days=400), "kind": "tou",
         "import_price": 0.20, "period": [{"name": "day", "start": "07:00", "end": "22:00",
                                           "import_price": 0.35, "days": "all"}]}]}).to_rows())
    accepted: dict[tuple[str, str, str], datetime] = {}
    recs = []
    for i in range(0, homes, 10):
        accepted[(_hid(i), "standby_waste", "")] = NOW - timedelta(days=40, hours=i % 24, minutes=i)
    accepted[(_hid(3), "replace_appliance", "heat_pump")] = NOW - timedelta(days=35, hours=5)
    accepted[(_hid(5), "load_shift", "heat_pump")] = NOW - timedelta(days=30, hours=2)
    accepted[(_hid(7), "peak_reduction", "")] = NOW - timedelta(days=7)
    accepted[("no-history", "standby_waste", "")] = NOW - timedelta(days=20)
    for (h, kind, device), _ in accepted.items():
        recs.append(Recommendation(h, device, kind, NOW - timedelta(days=60), kind, "detail", 30.0, 9.0, "EUR"))
    recs.append(Recommendation(_hid(1), "", "standby_waste", NOW - timedelta(days=60), "new", "d", 1.0, 1.0, "EUR"))
    store.write(Batch(recommendations=recs))
    home_rows, device_rows = [], []
    start = NOW - timedelta(days=DAYS)
    hours = [start + timedelta(hours=h) for h in range(DAYS * 24)]
    for i in range(homes):
        level = 300 + 40 * (i % 7)
        cut = accepted.get((_hid(i), "standby_waste", ""))
        for ts in hours:
            wh = level * (1.3 if ts.weekday() >= 5 else 1.0) * rng.uniform(0.7, 1.3)
            if cut is not None and ts > cut + timedelta(days=1):
                wh *= 0.7
            minutes = 60 if rng.uniform() > 0.01 else 30  # a few hours with a logger gap
            home_rows.append((_hid(i), ts, wh, minutes))
            if i in (3, 5):
                late = ts.hour >= 22 if ts > NOW - timedelta(days=29) else ts.hour < 22
                device_rows.append((_hid(i), "heat_pump", ts, wh * 0.4 if late or i == 3 else 0.0, minutes))
    _insert_hours(store, url, home_rows, device_rows)
    for (h, kind, device), when in accepted.items():
        assert store.set_recommendation_status(h, kind, device, "accepted", "owner")
        _set(store, url, "UPDATE recommendations SET status_changed_at = {} WHERE home_id = {} "
             "AND kind = {} AND device_id = {}", (when, h, kind, device))
    store.close()


def _insert_hours(store, url, homes, devices) -> None:
    if url.startswith("sqlite"):
        store.conn.executemany("INSERT INTO home_1h VALUES (?,?,?,?,?,?,?,?,?)",
                               [(h, to_us(ts), wh, wh, wh, wh, m, m, wh) for h, ts, wh, m in homes])
        store.conn.executemany("INSERT INTO device_1h VALUES (?,?,?,?,?,?,?,?,?,?)",
                               [(h, d, to_us(ts), wh, wh, wh, wh, m, m, wh) for h, d, ts, wh, m in devices])
        return
    with store.conn.cursor() as cur:
        with cur.copy("COPY home_1h (home_id, bucket, mean_power_w, min_power_w, max_power_w, "
                      "energy_wh, samples, minutes, power_wh) FROM STDIN") as copy:
            for h, ts, wh, m in homes:
                copy.write_row((h, ts, wh, wh, wh, wh, m, m, wh))
        with cur.copy("COPY device_1h (home_id, device_id, bucket, mean_power_w, min_power_w, "
                      "max_power_w, energy_wh, samples, minutes, power_wh) FROM STDIN") as copy:
            for h, d, ts, wh, m in devices:
                copy.write_row((h, d, ts, wh, wh, wh, wh, m, m, wh))


def _set(store, url, sql: str, args: tuple) -> None:
    if url.startswith("sqlite"):
        store.conn.execute(sql.format(*"????"), (to_us(args[0]), *args[1:]))
    else:
        store.conn.execute(sql.format(*["%s"] * 4), args)


def _store(kind: str, tmp_path, name: str):
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / name}.db", None
    db = _unique("shems_fleetq")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db}", db


def _drop(db: str | None) -> None:
    if db:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _as_dicts(results) -> list[str]:
    return [json.dumps({"home": m.home_id, "device": m.device_id, "kind": m.kind, "state": m.state,
                        "note": m.note, "accepted": m.accepted_at.isoformat(),
                        "savings": None if m.savings is None else [
                            m.savings.baseline_kwh, m.savings.actual_kwh, m.savings.saved_kwh,
                            m.savings.uncertainty_kwh, m.savings.days, m.savings.money,
                            m.savings.money_uncertainty, m.savings.method]}, sort_keys=True)
            for m in results]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_batched_savings_equal_the_per_home_measurement(kind, tmp_path):
    url, name = _store(kind, tmp_path, "savings")
    try:
        seed_savings(url, 40)
        new, fleet = measure_store(url, now=NOW)
        old, old_fleet = savings_per_home.measure_store(url, now=NOW)
        assert _as_dicts(new) == _as_dicts(old)
        assert fleet == old_fleet
        states = {(m.home_id, m.kind): m.state for m in new}
        # The seed reaches every branch: measured with a comparison group, a device, a load
        # shift, still measuring, and no history.
        assert states[(_hid(0), "standby_waste")] == "measured"
        assert "comparison group of" in next(m.savings.method for m in new
                                             if m.home_id == _hid(10) and m.savings)
        assert states[(_hid(3), "replace_appliance")] == "measured"
        assert states[(_hid(5), "load_shift")] == "measured"
        assert states[(_hid(7), "peak_reduction")] == "measuring"
        assert states[("no-history", "standby_waste")] == "not measurable"
        assert fleet.measured == 6  # homes 0, 10, 20, 30, the device and the shift
        # One home's own (the household's Alerts page) too, comparison group and all.
        one, _ = measure_store(url, _hid(10), now=NOW)
        before, _ = savings_per_home.measure_store(url, _hid(10), now=NOW)
        assert _as_dicts(one) == _as_dicts(before) and len(one) == 1
    finally:
        _drop(name)


def test_savings_statements_do_not_grow_with_the_fleet(tmp_path, count_statements):
    counts = {}
    for homes in (20, 200):
        url = f"sqlite:///{tmp_path / f's{homes}.db'}"
        seed_savings(url, homes)
        db = Database(url, migrate=False)
        try:
            count_statements.statements = 0
            results, fleet = measure_db(db, now=NOW)
            counts[homes] = count_statements.statements
        finally:
            db.close()
        assert len(results) == homes // 10 + 4 and fleet.measured >= homes // 10
    # Accepted recommendations, tariffs, zones, the homes', the devices' and the comparison
    # group's rows, the fleet's home ids (the old way: one per recommendation and one per
    # comparison home and measured recommendation).
    assert counts[20] == counts[200] <= 8, counts


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_fleet_page_statements_do_not_grow_with_the_fleet(kind, tmp_path, count_statements):
    counts = {}
    for homes in (20, 200):
        url, name = _store(kind, tmp_path, f"fleet{homes}")
        try:
            seeded = seed_fleet(url, homes, 1.0)
            db = Database(url, migrate=False)
            try:
                olga = Accounts(db).principal("olga")
                count_statements.statements = 0
                f = data.fleet(db, olga, seeded.now, 600.0, 600.0)
                page = data.fleet_homes(db, olga, seeded.now, 600.0, page_size=10)
                data.fleet_homes(db, olga, seeded.now, 600.0, search="heat_pump", page=1, page_size=10)
                data.home_choices(db, olga, "fleet-00")
                data.fleet_savings(db, olga)
                counts[homes] = count_statements.statements
            finally:
                db.close()
        finally:
            _drop(name)
        assert f.homes_total == homes and page.total == homes and page.rows.height == 10
    assert counts[20] == counts[200], counts


def _fleet_minutes(url: str) -> tuple[dict, dict]:
    """fleet_1m as stored, and recounted from home_1m: {bucket: (power_w, homes)}."""
    db = Database(url, migrate=False)
    try:
        stored = {b: (w, n) for b, w, n in db.rows(f"SELECT {db.us('bucket')}, power_w, homes FROM fleet_1m")}
        counted = {b: (w, n) for b, w, n in db.rows(
            f"SELECT {db.us('bucket')}, sum(mean_power_w), count(*) FROM home_1m GROUP BY bucket")}
    finally:
        db.close()
    return stored, counted


def _assert_same(stored: dict, counted: dict) -> None:
    assert stored.keys() == counted.keys() and stored
    for b, (w, n) in counted.items():
        assert stored[b][1] == n and stored[b][0] == pytest.approx(w, rel=1e-12), b


def test_the_store_keeps_the_fleet_minutes(store):
    """fleet_1m follows new, replayed, re-emitted and late home minutes in every store."""
    from pipeline.records import HomeWindow

    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    first = [HomeWindow(f"h{i}", t0 + timedelta(minutes=m), 100.0 + i + m, 1, 2, 3.0, 6)
             for i in range(5) for m in range(3)]
    store.write(Batch(home_windows=first))
    store.write(Batch(home_windows=first[:4]))  # a replay
    store.write(Batch(home_windows=[HomeWindow("h1", t0, 999.5, 1, 2, 3.0, 6),  # re-emitted
                                    HomeWindow("h9", t0 + timedelta(minutes=1), 7.25, 1, 2, 3.0, 6),
                                    HomeWindow("h2", t0 - timedelta(days=3), 50.0, 1, 2, 3.0, 6)]))
    stored, counted = _fleet_minutes(store.url)
    _assert_same(stored, counted)
    assert stored[to_us(t0)] == (pytest.approx(100 + 999.5 + 102 + 103 + 104), 5)
    assert stored[to_us(t0 + timedelta(minutes=1))][1] == 6
    # Each home's day: its minutes' energy.
    store.write(Batch(home_windows=[HomeWindow("h1", t0.replace(hour=23, minute=59), 1.0, 1, 2, 0.25, 6),
                                    HomeWindow("h1", t0 + timedelta(days=1), 1.0, 1, 2, 4.0, 6)]))
    db = Database(store.url, migrate=False)
    try:
        days = {(h, d): wh for h, d, wh in db.rows(f"SELECT home_id, {db.us('day')}, energy_wh FROM home_1d")}
    finally:
        db.close()
    day = to_us(t0.replace(hour=0))
    assert days == pytest.approx({**{(f"h{i}", day): 9.0 for i in range(5)}, ("h1", day): 9.25,
                                  ("h9", day): 3.0, ("h2", day - 3 * 86_400_000_000): 3.0,
                                  ("h1", day + 86_400_000_000): 4.0})


def test_postgres_writers_at_once_add_up_in_the_fleet_minutes(pg_url):
    """Two flow processes write different homes' same minute in overlapping transactions: the
    one committing second waits for the first and adds its homes to the first's."""
    import threading
    import time

    from pipeline.records import HomeWindow

    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    a, b = open_store(pg_url), open_store(pg_url)
    a.migrate()
    try:
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with b.transaction():
                    b.write_rows(Batch(home_windows=[HomeWindow(f"b{i}", t0, 10.0, 1, 2, 3.0, 6)
                                                     for i in range(3)]))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        with a.transaction():
            a.write_rows(Batch(home_windows=[HomeWindow(f"a{i}", t0, 100.0, 1, 2, 3.0, 6) for i in range(4)]))
            other = threading.Thread(target=second)
            other.start()
            time.sleep(1.0)  # the second writer is blocked on the minute's row now
        other.join(30)
        assert not errors and not other.is_alive()
        stored, counted = _fleet_minutes(pg_url)
        _assert_same(stored, counted)
        assert stored[to_us(t0)] == (pytest.approx(430.0), 7)
    finally:
        a.close()
        b.close()


# The Fleet page's forecast as it was computed before fleet_forecast: every home's newest hourly
# forecast made in the last 6 h, grouped.
_FORECAST_BEFORE = (
    "SELECT {target} AS target_ts, sum(f.yhat_w), sum(f.lower_w), sum(f.upper_w), count(*) "
    "FROM forecasts f JOIN (SELECT home_id, max(made_at) AS made_at FROM forecasts "
    "WHERE resolution_min = 60 AND made_at >= :since GROUP BY home_id) l "
    "ON l.home_id = f.home_id AND l.made_at = f.made_at "
    "WHERE f.resolution_min = 60 AND f.target_ts >= :now GROUP BY f.target_ts ORDER BY 1")


def test_the_store_keeps_the_fleet_forecast(store):
    """New, replayed, amended, late and old forecasts: the Fleet page's forecast from
    fleet_forecast equals the one grouped from every home's forecasts."""
    from pipeline.records import Forecast

    m1 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)

    def made(home: str, at: datetime, level: float, resolution: int = 60) -> list[Forecast]:
        return [Forecast(home, at, at + timedelta(hours=h), resolution, (h + 1) * 60,
                         level + h, level - 50 + h, level + 50 + h, "test") for h in range(6)]

    store.write(Batch(forecasts=[f for i in range(4) for f in made(f"h{i}", m1, 100.0 * (i + 1))]
                      + made("h4", m1 - timedelta(hours=10), 999.0)  # too old to show
                      + made("h0", m1, 5.0, resolution=15)))  # not hourly
    store.write(Batch(forecasts=made("h0", m1 + timedelta(hours=1), 110.0)
                      + made("h1", m1 + timedelta(hours=1), 220.0)))
    store.write(Batch(forecasts=made("h1", m1 + timedelta(hours=1), 220.0)))  # a replay
    store.write(Batch(forecasts=made("h2", m1, 333.0)[:3]))  # amended, in part
    store.write(Batch(forecasts=made("h3", m1 - timedelta(hours=1), 1.0)))  # late: not the newest
    now = m1 + timedelta(hours=2)
    db = Database(store.url, migrate=False)
    try:
        olga = _operator(db)
        got = data.fleet(db, olga, now, 600.0, 600.0)
        before = db.rows(_FORECAST_BEFORE.format(target=db.us("f.target_ts")),
                         {"since": now - timedelta(hours=6), "now": now - timedelta(hours=1)})
    finally:
        db.close()
    assert [r[0] for r in before] == [to_us(t) for t in got.forecast["target_ts"]]
    assert len(before) == 6  # m1+1h .. m1+6h (h0 and h1 forecast to m1+6h from m1+1h)
    for column, i in (("yhat_w", 1), ("lower_w", 2), ("upper_w", 3)):
        assert got.forecast[column].to_list() == pytest.approx([r[i] for r in before]), column
    assert got.forecast_homes == max(r[4] for r in before) == 4


def _operator(db: Database):
    from ui.auth import Role

    accounts = Accounts(db)
    accounts.add_user("olga", "olga-secret-12", Role.OPERATOR, by="test")
    return accounts.principal("olga")


def test_migration_0016_fills_the_rollups_as_the_writes_do(store):
    """A store that has minutes and forecasts before it gains the rollups: the migration's
    backfill gives what the writes would have kept."""
    from pipeline.records import Forecast, HomeWindow

    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    store.write(Batch(home_windows=[HomeWindow(f"h{i}", t0 + timedelta(minutes=m), 10.0 * i + m, 1, 2, 3.0, 6)
                                    for i in range(4) for m in range(5)],
                      forecasts=[Forecast(f"h{i}", t0 - timedelta(hours=k), t0 + timedelta(hours=h), 60,
                                          60, 100.0 * i + h - k, 1.0, 2.0, "test")
                                 for i in range(3) for k in range(2) for h in range(3)]))
    store.write(Batch(home_windows=[HomeWindow("h1", t0, 55.5, 1, 2, 3.0, 6)]))
    tables = {"fleet_1m": "bucket", "home_1d": "home_id, day", "forecast_newest": "home_id, resolution_min",
              "fleet_forecast": "resolution_min, made_at, target_ts"}

    def rows() -> dict[str, list[tuple]]:
        db = Database(store.url, migrate=False)
        try:
            return {t: db.rows(f"SELECT * FROM {t} ORDER BY {keys}") for t, keys in tables.items()}
        finally:
            db.close()

    written = rows()
    db = Database(store.url, migrate=False)
    try:
        for t in tables:
            db.execute(f"DELETE FROM {t}")
        db.execute("DELETE FROM schema_migrations WHERE version = 16")
    finally:
        db.close()
    store.migrate()
    filled = rows()
    assert filled["forecast_newest"] == written["forecast_newest"] and len(filled["forecast_newest"]) == 3
    assert [r[:2] for r in filled["home_1d"]] == [r[:2] for r in written["home_1d"]]
    assert [r[2] for r in filled["home_1d"]] == pytest.approx([r[2] for r in written["home_1d"]])
    for t, keys in (("fleet_1m", 1), ("fleet_forecast", 3)):  # keys, sums, then homes
        assert len(filled[t]) == len(written[t]) > 0
        for a, b in zip(filled[t], written[t]):
            assert a[:keys] == b[:keys] and a[-1] == b[-1], t
            assert list(a[keys:-1]) == pytest.approx(list(b[keys:-1])), t
