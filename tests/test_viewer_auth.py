"""Accounts, sessions, sign-in limits and the data layer's authorisation, against both stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.records import CommandState, DeviceKind, DeviceWindow, HomeWindow, Reading, Recommendation
from sinks.base import Batch
from sinks.stores import open_store
from ui import control, data
from ui.accounts import Accounts, SessionExpired, SignInError
from ui.auth import AccessDenied, Principal, Role
from ui.cost import Pricing
from ui.db import Database
from ui.settings import ViewerSettings, load_settings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
PRICING = Pricing("GBP", 0.30, "flat 0.30 GBP/kWh")


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def db(store_url):
    database = Database(store_url)
    yield database
    database.close()


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def accounts(db, clock):
    return Accounts(db, ViewerSettings(), clock)


def _two_homes(url: str) -> None:
    """Home a and home b, each with a meter and a kettle over 10 minutes, and b's recommendation."""
    batch = Batch()
    for home in ("a", "b"):
        for i in range(10):
            t = T0 + timedelta(minutes=i)
            batch.readings += [Reading(home, "mains", t, 500.0, kind=DeviceKind.METER),
                               Reading(home, "kettle", t, 200.0, kind=DeviceKind.APPLIANCE)]
            batch.device_windows += [
                DeviceWindow(home, "mains", DeviceKind.METER, t, 500.0, 500, 500, 500 / 60, 1),
                DeviceWindow(home, "kettle", DeviceKind.APPLIANCE, t, 200.0, 200, 200, 200 / 60, 1)]
            batch.home_windows.append(HomeWindow(home, t, 500.0, 500, 500, 500 / 60, 1))
        batch.recommendations.append(Recommendation(home, "", "standby_waste", T0, "t", "d", 1.0,
                                                    0.3, "GBP"))
    store = open_store(url)
    try:
        store.write(batch)
    finally:
        store.close()


# ------------------------------------------------------------------------------ users, sign-in

def test_passwords_are_stored_as_argon2id_hashes(db, accounts):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="test")
    (stored,) = db.rows("SELECT password_hash FROM users WHERE username = 'alice'")[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert accounts.sign_in("alice", "correct horse").principal == Principal(
        "alice", Role.HOMEOWNER, frozenset({"a"}))


def test_wrong_name_and_wrong_password_read_the_same(accounts):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="test")
    with pytest.raises(SignInError) as wrong_password:
        accounts.sign_in("alice", "wrong horse")
    with pytest.raises(SignInError) as wrong_name:
        accounts.sign_in("alicia", "correct horse")
    assert str(wrong_password.value) == str(wrong_name.value) == "Wrong user name or password."


def test_failures_from_one_address_make_it_wait_longer_each_time(accounts, clock):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="test")
    for _ in range(5):
        with pytest.raises(SignInError, match="Wrong"):
            accounts.sign_in("alice", "guess", "203.0.113.7")
    for wait in (1, 2, 4):
        with pytest.raises(SignInError, match=f"Try again in {wait} seconds?\\.") as throttled:
            accounts.sign_in("alice", "correct horse", "203.0.113.7")  # even the right password
        assert throttled.value.retry_after == timedelta(seconds=wait)
        clock.t += timedelta(seconds=wait)
        with pytest.raises(SignInError, match="Wrong"):
            accounts.sign_in("alice", "guess", "203.0.113.7")
    clock.t += timedelta(seconds=8)
    assert accounts.sign_in("alice", "correct horse", "203.0.113.7").principal.username == "alice"
    # Another address was never slowed by these failures.
    assert accounts.sign_in("alice", "correct horse", "198.51.100.1").principal.username == "alice"


def test_a_successful_sign_in_clears_the_names_failures_but_not_the_addresss(accounts, clock):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="test")
    for i in range(9):  # nine addresses, one guess each: under both limits
        clock.t += timedelta(seconds=1)
        with pytest.raises(SignInError, match="Wrong"):
            accounts.sign_in("alice", "guess", f"192.0.2.{i}")
    clock.t += timedelta(seconds=1)
    accounts.sign_in("alice", "correct horse", "198.51.100.1")
    for i in range(9, 18):  # the name starts afresh: nine more are still free
        clock.t += timedelta(seconds=1)
        with pytest.raises(SignInError, match="Wrong"):
            accounts.sign_in("alice", "guess", f"192.0.2.{i}")
    clock.t += timedelta(seconds=1)
    with pytest.raises(SignInError, match="Wrong"):
        accounts.sign_in("alice", "guess", "192.0.2.99")
    with pytest.raises(SignInError, match="Try again in 1 second"):  # the 11th since
        accounts.sign_in("alice", "guess", "192.0.2.100")
    # An address's own failures stay counted across a success (an attacker with an account of
    # their own cannot clear them by signing in).
    accounts.add_user("mallory", "mallory pass", Role.HOMEOWNER, ["m"], by="test")
    for _ in range(4):
        with pytest.raises(SignInError, match="Wrong"):
            accounts.sign_in("dave", "guess", "203.0.113.7")
    accounts.sign_in("mallory", "mallory pass", "203.0.113.7")
    with pytest.raises(SignInError, match="Wrong"):
        accounts.sign_in("bob", "guess", "203.0.113.7")
    with pytest.raises(SignInError, match="Try again in 1 second"):
        accounts.sign_in("carol", "guess", "203.0.113.7")


def test_sessions_end_when_idle_and_at_their_maximum_age(accounts, clock):
    accounts.add_user("olga", "operator pass", Role.OPERATOR, by="test")
    session = accounts.sign_in("olga", "operator pass")
    assert session.expires_at == T0 + timedelta(hours=12)
    # Activity every 20 minutes keeps it alive past the 30-minute idle limit...
    for step in range(1, 30):
        clock.t = T0 + timedelta(minutes=20 * step)
        if clock.t >= session.expires_at:
            break
        assert accounts.resume(session.token).role is Role.OPERATOR
    # ...but not past 12 hours.
    clock.t = session.expires_at
    with pytest.raises(SessionExpired, match="expired"):
        accounts.resume(session.token)
    idle = accounts.sign_in("olga", "operator pass")
    clock.t += timedelta(minutes=29)
    accounts.resume(idle.token, touch=False)  # an auto-refresh: not activity
    clock.t += timedelta(minutes=1)
    with pytest.raises(SessionExpired):
        accounts.resume(idle.token)


def test_a_password_change_or_removal_ends_the_users_sessions(accounts):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="test")
    first = accounts.sign_in("alice", "correct horse")
    assert accounts.set_password("alice", "battery staple", by="admin")
    with pytest.raises(SessionExpired):
        accounts.resume(first.token)
    second = accounts.sign_in("alice", "battery staple")
    assert accounts.remove_user("alice", by="admin")
    with pytest.raises(SessionExpired):
        accounts.resume(second.token)
    assert accounts.principal("alice") is None
    assert not accounts.remove_user("alice", by="admin")


def test_bad_accounts_are_refused_with_a_reason(accounts):
    with pytest.raises(ValueError, match="at least 10 characters"):
        accounts.add_user("alice", "short", Role.HOMEOWNER, ["a"], by="test")
    with pytest.raises(ValueError, match="needs at least one home"):
        accounts.add_user("alice", "long enough!", Role.HOMEOWNER, [], by="test")
    with pytest.raises(ValueError, match="user name is 1-64"):
        accounts.add_user("alice smith", "long enough!", Role.OPERATOR, [], by="test")
    accounts.add_user("alice", "long enough!", Role.HOMEOWNER, ["a"], by="test")
    with pytest.raises(ValueError, match="already exists"):
        accounts.add_user("alice", "long enough!", Role.HOMEOWNER, ["a"], by="test")


def test_user_management_is_audited(db, accounts):
    accounts.add_user("alice", "correct horse", Role.HOMEOWNER, ["a"], by="adam")
    accounts.set_access("alice", Role.HOMEOWNER, ["a", "b"], by="adam")
    with pytest.raises(SignInError):
        accounts.sign_in("alice", "nope")
    admin = Principal("adam", Role.ADMIN, frozenset())
    log = data.audit_log(db, admin)
    assert log.select("username", "action", "detail").rows() == [
        ("alice", "signin_failed", "local"), ("adam", "user_access", "alice: homeowner of a, b"),
        ("adam", "user_add", "alice as homeowner of a")]
    assert accounts.principal("alice").homes == frozenset({"a", "b"})


def test_the_sign_in_key_comes_from_a_file_and_stays_out_of_reprs(tmp_path):
    secret = tmp_path / "signin_key"
    secret.write_text("k3y-from-a-docker-secret\n")
    settings = load_settings({"SHEMS_UI_SIGNIN_KEY_FILE": str(secret)})
    assert settings.signin_key == "k3y-from-a-docker-secret"
    assert "k3y" not in repr(settings)
    with pytest.raises(ValueError, match="SHEMS_UI_SIGNIN_KEY_FILE: cannot read"):
        load_settings({"SHEMS_UI_SIGNIN_KEY_FILE": str(tmp_path / "missing")})


def test_settings_come_from_the_environment_with_clear_errors():
    assert load_settings({"SHEMS_UI_SESSION_IDLE_S": "60", "SHEMS_STORE_URL": "sqlite:///x.db"}) \
        == ViewerSettings(store_url="sqlite:///x.db", session_idle_s=60.0)
    with pytest.raises(ValueError, match="SHEMS_UI_COMMANDS_PER_MINUTE must be a int"):
        load_settings({"SHEMS_UI_COMMANDS_PER_MINUTE": "many"})


# ------------------------------------------------------------------------------ authorisation

ALICE = Principal("alice", Role.HOMEOWNER, frozenset({"a"}))
OLGA = Principal("olga", Role.OPERATOR, frozenset())


def _home_reads(db: Database, who: Principal, home: str) -> list:
    """Every per-home read of the viewer."""
    now = T0 + timedelta(minutes=10)
    return [
        lambda: data.devices_now(db, who, home),
        lambda: data.home_timezone(db, who, home, "UTC"),
        lambda: data.live(db, who, home, now, "UTC", PRICING, 600),
        lambda: data.history(db, who, home, T0, now, None, "UTC", PRICING),
        lambda: data.forecast_resolutions(db, who, home),
        lambda: data.forecast(db, who, home, 60, now),
        lambda: data.anomalies(db, who, home, now),
        lambda: data.recommendations(db, who, home),
        lambda: control.recent_commands(db, who, home),
        lambda: control.switched_off_but_drawing(data.devices_now(db, OLGA, home), db, who, home, 5),
    ]


def test_the_data_layer_refuses_a_homeowner_another_homes_data(db, store_url):
    _two_homes(store_url)
    for read in _home_reads(db, ALICE, "b"):
        with pytest.raises(AccessDenied, match="You do not have access to home 'b'"):
            read()
    # A home that does not exist reads the same: no probing for ids.
    with pytest.raises(AccessDenied, match="You do not have access to home 'zz'"):
        data.live(db, ALICE, "zz", T0, "UTC", PRICING, 600)
    # Her own home, and any home for an operator, work.
    for read in _home_reads(db, ALICE, "a") + _home_reads(db, OLGA, "b"):
        read()
    assert data.homes_for(db, ALICE) == ["a"] and data.homes_for(db, OLGA) == ["a", "b"]


def test_fleet_users_and_decisions_need_their_roles(db, store_url, accounts):
    _two_homes(store_url)
    with pytest.raises(AccessDenied, match="operators"):
        data.fleet(db, ALICE, T0, 600, 600)
    with pytest.raises(AccessDenied, match="administrators"):
        data.audit_log(db, OLGA)
    with pytest.raises(AccessDenied, match="Only the household"):
        data.decide_recommendation(db, accounts, OLGA, "a", "standby_waste", "", "accepted")
    with pytest.raises(AccessDenied):
        data.decide_recommendation(db, accounts, ALICE, "b", "standby_waste", "", "accepted")
    assert data.decide_recommendation(db, accounts, ALICE, "a", "standby_waste", "", "accepted")
    assert data.recommendations(db, OLGA, "b")["status"].to_list() == ["new"]
    assert data.fleet(db, OLGA, T0 + timedelta(minutes=10), 600, 600).homes_total == 2


def test_commands_are_refused_before_anything_is_sent(db, store_url, accounts):
    _two_homes(store_url)
    settings = ViewerSettings(mqtt_url="mqtt://127.0.0.1:1")  # nothing listens: must not be reached
    with pytest.raises(AccessDenied):
        control.send_command(db, accounts, settings, ALICE, "b", "kettle", CommandState.OFF)
    with pytest.raises(control.CommandRefused, match="mains is a meter: it cannot be switched"):
        control.send_command(db, accounts, settings, ALICE, "a", "mains", CommandState.OFF)
    with pytest.raises(AccessDenied, match="no device 'oven'"):
        control.send_command(db, accounts, settings, ALICE, "a", "oven", CommandState.OFF)
    assert db.rows("SELECT count(*) FROM device_commands")[0][0] == 0


# ------------------------------------------------------------------------------ the numbers

def test_unmetered_band_is_the_meter_minus_its_sub_meters():
    t = [T0, T0 + timedelta(hours=1)]
    usage = pl.DataFrame({"device_id": ["mains", "mains", "kettle", "kettle", "pv"],
                          "kind": ["meter", "meter", "appliance", "appliance", "pv"],
                          "bucket": [t[0], t[1], t[0], t[1], t[1]],
                          "wh": [500.0, 100.0, 200.0, 300.0, -250.0], "minutes": [60] * 5})
    bands = data.with_unmetered(usage).sort("device_id", "bucket")
    rest = bands.filter(pl.col("device_id") == data.UNMETERED)
    # Hour 0: 500 - 200. Hour 1: the meter saw 100 net of 250 of PV: 100 - 300 + 250 = 50.
    assert rest["wh"].to_list() == [300.0, 50.0]
    assert "mains" not in bands["device_id"].to_list()
    no_meter = usage.filter(pl.col("kind") != "meter")
    assert data.with_unmetered(no_meter).equals(no_meter)


def test_resolution_is_coarsened_to_keep_charts_readable():
    day = timedelta(days=1)
    assert data.pick_resolution(T0, T0 + day, None) == (60, "")
    assert data.pick_resolution(T0, T0 + 7 * day, None) == (900, "")
    assert data.pick_resolution(T0, T0 + 90 * day, None) == (3600, "")
    assert data.pick_resolution(T0, T0 + 365 * day, None) == (86400, "")
    step, note = data.pick_resolution(T0, T0 + 30 * day, 60)
    assert step == 900 and note.startswith("1 min over this range would draw 43,200 points per")
    assert data.pick_resolution(T0, T0 + 30 * day, 86400) == (86400, "")


def test_base_load_is_the_quiet_hours_floor():
    hours = pl.DataFrame({"mean_w": [100.0] * 20 + [2000.0] * 28, "minutes": [60] * 48})
    assert data.base_load(hours) == pytest.approx(100.0)
    assert data.base_load(hours.head(10)) is None  # less than a day
    partial = hours.with_columns(pl.when(pl.col("mean_w") < 500).then(10).otherwise(60).alias("minutes"))
    assert data.base_load(partial) == pytest.approx(2000.0)  # thin hours do not count


def test_costs_follow_the_stores_time_of_use_tariff_per_device(db, store_url):
    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod
    from ui.cost import load_pricing

    batch = Batch(readings=[Reading("a", "mains", T0, 500.0, kind=DeviceKind.METER),
                            Reading("a", "kettle", T0, 200.0)])  # registers the devices
    for i in range(60):  # 12:00-13:00: meter 500 W, kettle 200 W, so 300 W unmetered
        t = T0 + timedelta(minutes=i)
        batch.device_windows += [
            DeviceWindow("a", "mains", DeviceKind.METER, t, 500.0, 500, 500, 500 / 60, 1),
            DeviceWindow("a", "kettle", DeviceKind.APPLIANCE, t, 200.0, 200, 200, 200 / 60, 1)]
        batch.home_windows.append(HomeWindow("a", t, 500.0, 500, 500, 500 / 60, 1))
    peak = TouPeriod("peak", 12 * 60 + 30, 13 * 60, 1.0)  # 12:30-13:00 at 1.00, else 0.20
    tou = Tariff(T0 - timedelta(days=30), TariffKind.TOU, "EUR", "UTC", "test", 0.20,
                 periods=(peak,))
    store = open_store(store_url)
    try:
        store.write(batch)
        store.upsert_tariffs(TariffBook("EUR", (tou,)).to_rows())
    finally:
        store.close()
    pricing = load_pricing(db, ViewerSettings())
    assert pricing.currency == "EUR" and pricing.source.startswith("the store's tariffs (1)")
    h = data.history(db, OLGA, "a", T0, T0 + timedelta(hours=1), None, "UTC", pricing)
    cost = dict(h.totals.select("device_id", "cost").rows())
    # 0.2 kWh of kettle and 0.3 kWh unmetered, half at 0.20 and half at 1.00 per kWh.
    assert cost["kettle"] == pytest.approx(0.1 * 0.20 + 0.1 * 1.00)
    assert cost["unmetered"] == pytest.approx(0.15 * 0.20 + 0.15 * 1.00)
    assert h.total_kwh == pytest.approx(0.5) and h.total_cost == pytest.approx(0.30)
    # Base load per year is priced at the coming week's average: (23.5 h x 0.2 + 0.5 h x 1) / 24.
    assert pricing.mean_import_price("a", T0) == pytest.approx((23.5 * 0.2 + 0.5 * 1.0) / 24)


def test_without_a_tariff_the_flat_price_applies_and_says_so(db, store_url):
    from ui.cost import load_pricing

    _two_homes(store_url)
    pricing = load_pricing(db, ViewerSettings(flat_price_per_kwh=0.5, currency="GBP"))
    assert pricing.source == "flat 0.50 GBP/kWh (no tariff in the store)"
    h = data.history(db, OLGA, "a", T0, T0 + timedelta(minutes=10), None, "UTC", pricing)
    assert h.total_kwh == pytest.approx(500 / 6 / 1000)
    assert h.total_cost == pytest.approx(500 / 6 / 1000 * 0.5)


def test_a_long_range_reads_whole_hours_from_the_rollup_and_its_ragged_ends_from_minutes(db, store_url):
    """Over 40 days the history is fetched hourly: whole hours from device_1h (kept by the store),
    the partial hours at either end from device_1m; both must give the minutes' totals."""
    batch = Batch(readings=[Reading("a", "mains", T0, 400.0, kind=DeviceKind.METER),
                            Reading("a", "kettle", T0, 100.0)])
    minutes = [T0 + timedelta(minutes=7 * i + 3) for i in range(40 * 24 * 60 // 7)]
    for i, t in enumerate(minutes):
        batch.device_windows += [
            DeviceWindow("a", "mains", DeviceKind.METER, t, 400.0 + i % 5, 400, 405, 6.7, 1),
            DeviceWindow("a", "kettle", DeviceKind.APPLIANCE, t, 100.0, 100, 100, 1.7, 1)]
    store = open_store(store_url)
    try:
        store.write(batch)
    finally:
        store.close()
    start, end = T0 + timedelta(minutes=17), T0 + timedelta(days=40, minutes=-20)
    h = data.history(db, OLGA, "a", start, end, None, "UTC", PRICING)
    inside = [(i, t) for i, t in enumerate(minutes) if start <= t < end]
    want_meter_wh = sum(400.0 + i % 5 for i, _ in inside) / 60
    want_kettle_wh = 100.0 * len(inside) / 60
    kwh = dict(h.totals.select("device_id", "kwh").rows())
    assert kwh["kettle"] == pytest.approx(want_kettle_wh / 1000)
    assert kwh["unmetered"] == pytest.approx((want_meter_wh - want_kettle_wh) / 1000)
    assert h.total_kwh == pytest.approx(want_meter_wh / 1000)


def test_a_day_cut_off_at_now_is_compared_with_the_same_hours_of_the_day_before(db, store_url):
    """Today 00:00-08:00 against yesterday 00:00-08:00, not against yesterday 16:00-24:00 (the
    stretch of the same length ending where today starts): the History page said +43 % for a
    morning that used half of the morning before."""
    day = datetime(2026, 3, 3, tzinfo=timezone.utc)
    power = {day - timedelta(days=1): 400.0, day - timedelta(hours=8): 100.0, day: 200.0}  # three 8 h stretches
    batch = Batch(readings=[Reading("a", "mains", day - timedelta(days=1), 400.0, kind=DeviceKind.METER)])
    for begin, watts in power.items():
        for minute in range(8 * 60):
            t = begin + timedelta(minutes=minute)
            batch.device_windows.append(DeviceWindow("a", "mains", DeviceKind.METER, t, watts, watts, watts,
                                                     watts / 60, 1))
    store = open_store(store_url)
    try:
        store.write(batch)
    finally:
        store.close()
    h = data.history(db, OLGA, "a", day, day + timedelta(hours=8), None, "UTC", PRICING, period=timedelta(days=1))
    assert h.common_kwh == pytest.approx(1.6) and h.prev_common_kwh == pytest.approx(3.2)  # -50 %
    assert h.common_coverage == pytest.approx(1.0)
    # A whole range (no clipping) is still compared with the one just before it.
    whole = data.history(db, OLGA, "a", day - timedelta(hours=8), day, None, "UTC", PRICING)
    assert whole.total_kwh == pytest.approx(0.8)
    assert whole.prev_coverage == 0.0 and whole.prev_common_kwh == 0.0  # 08:00-16:00 the day before: no data


def test_a_home_without_a_registry_zone_is_shown_in_its_tariffs_zone_on_every_page(db, store_url):
    """An imported home has no zone in `devices`; its pages followed the browser while its Bill
    followed the tariff, so a New York browser showed a London home's 'today' five hours late."""
    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind
    from ui.common import Viewer, timezone_for

    _two_homes(store_url)
    settings = ViewerSettings(timezone="America/New_York")
    viewer = Viewer(settings, db, Accounts(db, settings))
    assert timezone_for(viewer, OLGA, "a") == "America/New_York"  # no registry zone, no tariff: the fallback
    london = Tariff(T0 - timedelta(days=30), TariffKind.FLAT, "GBP", "Europe/London", "flat", 0.25)
    store = open_store(store_url)
    try:
        store.upsert_tariffs(TariffBook("GBP", (london,)).to_rows())
    finally:
        store.close()
    viewer = Viewer(settings, db, Accounts(db, settings))  # a page run reads the tariffs once, as it starts
    assert timezone_for(viewer, OLGA, "a") == "Europe/London"
    db.execute("UPDATE devices SET timezone = 'Europe/Dublin' WHERE home_id = 'a'")
    assert timezone_for(viewer, OLGA, "a") == "Europe/Dublin"  # the registry's zone comes first
