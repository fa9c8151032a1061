"""A device's next run planned from the viewer (issue 14): "cheapest before HH:MM" on the Plan
page and an accepted load-shift recommendation on the Alerts page, each stored as an accepted plan
for that device only, which ``shems execute`` carries out; on SQLite and PostgreSQL, through the
real viewer (AppTest).

The home: a dishwasher that ran 90 minutes at 1.8 kW every evening for a week, a mains meter, the
Economy 7 tariff (09p from 00:30 to 07:30 London time, 28p otherwise)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.energy.device_plan import TypicalRun, cheapest_before, next_local, recommended_start, typical_run
from pipeline.energy.optimize import Battery, PlanProblem, optimize
from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod
from pipeline.records import DeviceKind, DeviceWindow, Reading, Recommendation
from pipeline.tools.plan_executor import PlanExecutor
from sinks.base import Batch
from sinks.stores import open_store
from tests.viewer_seed import APP, apply_env, viewer_env
from ui.accounts import Accounts
from ui.auth import Role
from ui.db import Database
from ui.plans import PlanStore

HOME = "h1"
LONDON = ZoneInfo("Europe/London")
RUN = timedelta(minutes=90)
TITLE = "Run the dishwasher at about 01:00"
SECRET = "alice-secret-1"


def night(t: datetime) -> bool:
    local = t.astimezone(LONDON).time()
    return time(0, 30) <= local < time(7, 30)


@pytest.fixture(params=["sqlite", "postgres"])
def home(request, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'shems.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    store = open_store(url)
    store.migrate()
    windows = []
    for day in range(1, 8):  # every evening at 18:00 UTC for 90 minutes
        start = (now - timedelta(days=day)).replace(hour=18, minute=0)
        windows += [DeviceWindow(HOME, "dishwasher", DeviceKind.APPLIANCE, start + timedelta(minutes=m),
                                 1800.0, 1700.0, 1900.0, 30.0, 6) for m in range(90)]
        windows += [DeviceWindow(HOME, "dishwasher", DeviceKind.APPLIANCE, start + timedelta(minutes=90 + m),
                                 1.0, 1.0, 1.0, 0.02, 6) for m in range(30)]
    economy7 = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.TOU, "GBP", "Europe/London",
                      "Economy 7", 0.28, periods=(TouPeriod("night", 30, 7 * 60 + 30, 0.09),))
    try:
        store.write(Batch(
            readings=[Reading(HOME, "dishwasher", now, 1.0, kind=DeviceKind.APPLIANCE),
                      Reading(HOME, "mains", now, 400.0, kind=DeviceKind.METER)],
            device_windows=windows,
            recommendations=[Recommendation(HOME, "dishwasher", "load_shift", now, TITLE,
                                            "7 runs of the dishwasher cost 3.53 GBP at the times they ran.",
                                            0.0, 5.0, "GBP")]))
        store.upsert_tariffs(TariffBook("GBP", (economy7,)).to_rows())
    finally:
        store.close()
    db = Database(url)
    Accounts(db).add_user("alice", SECRET, Role.HOMEOWNER, [HOME], by="test")
    apply_env(monkeypatch, viewer_env(url))
    try:
        yield db
    finally:
        db.close()
        st.cache_resource.clear()


def page(db: Database, path: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["session_token"] = Accounts(db).sign_in("alice", SECRET).token
    at.query_params["home"] = HOME
    at.run()
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def switches(db: Database, plan_id: str) -> list[tuple[datetime, str]]:
    return [(c.command.run_at, c.command.state.value) for c in PlanStore(db).commands(plan_id)]


def test_cheapest_before_on_the_plan_page_stores_the_run_in_the_night_before_the_deadline(home):
    db = home
    at = page(db, "views/plan.py")
    at.selectbox(key="cheap_device").set_value("dishwasher")
    at.time_input(key="cheap_before").set_value(time(7, 0))
    before = datetime.now(timezone.utc)
    at.button(key="cheap_plan").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (plan_id,) = PlanStore(db).plans(HOME)
    stored = PlanStore(db).plan(plan_id)
    assert stored is not None and stored.status == "active" and stored.scope == ("dishwasher",)
    assert stored.accepted_by == "alice"
    cmds = switches(db, plan_id)
    # Held off from the next quarter hour (armed now), on in the cheap night, off after the run.
    states = [s for _, s in cmds]
    assert states in (["off", "on", "off"], ["on", "off"])
    on_at, off_at = cmds[-2][0], cmds[-1][0]
    assert off_at - on_at == RUN
    assert cmds[0][0] > before and cmds[0][0] - before <= timedelta(minutes=16)
    deadline = next_local(cmds[0][0], time(7, 0), "Europe/London")
    if deadline - cmds[0][0] < RUN:
        deadline = next_local(deadline, time(7, 0), "Europe/London")
    assert off_at <= deadline
    assert all(night(on_at + timedelta(minutes=m)) for m in range(0, 90, 15)), on_at
    assert stored.cost <= stored.baseline_cost
    assert stored.cost == pytest.approx(1.8 * 1.5 * 0.09)
    assert any("dishwasher: kept off until" in shown(s.value) for s in at.success)
    assert any(plan_id in shown(m.value) and "for dishwasher only" in shown(m.value) for m in at.markdown)


def test_accepting_a_load_shift_plans_the_device_on_at_the_recommended_start_and_off_after_its_run(home):
    db = home
    at = page(db, "views/alerts.py")
    assert any(TITLE in shown(m.value) for m in at.markdown)
    accept = [b for b in at.button if b.key is not None and b.key.startswith("accept_")]
    assert len(accept) == 1
    before = datetime.now(timezone.utc)
    accept[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    (plan_id,) = PlanStore(db).plans(HOME)
    stored = PlanStore(db).plan(plan_id)
    assert stored is not None and stored.status == "active" and stored.scope == ("dishwasher",)
    on_at = next_local(before, time(1, 0), "Europe/London")
    assert switches(db, plan_id) == [(on_at, "on"), (on_at + RUN, "off")]
    assert stored.cost == pytest.approx(1.8 * 1.5 * 0.09)
    status = db.rows("SELECT status, status_changed_by FROM recommendations WHERE home_id = :h",
                     {"h": HOME})
    assert status == [("accepted", "alice")]
    assert any(f"Planned (plan {plan_id}): dishwasher on at" in shown(s.value) for s in at.success)

    # shems execute sends it at its time, to the device's own topic, and not before.
    sent: list[tuple[str, bytes]] = []
    executor = PlanExecutor(db, lambda topic, payload: sent.append((topic, payload)))
    executor.poll(on_at - timedelta(seconds=1))
    assert sent == []
    executor.poll(on_at)
    assert [t for t, _ in sent] == [f"shems/{HOME}/dishwasher/set"] and b'"on"' in sent[0][1]
    executor.poll(on_at + RUN)
    assert [t for t, _ in sent][-1] == f"shems/{HOME}/dishwasher/set" and b'"off"' in sent[-1][1]


def test_a_device_plan_leaves_the_homes_battery_plan_active(home):
    db = home
    store = PlanStore(db)
    now = datetime.now(timezone.utc)
    slot = timedelta(minutes=15)
    problem = PlanProblem(now + slot, slot, (0.1, 0.1, 0.6, 0.6), (300.0,) * 4, (), (0.0,) * 4, None, "GBP",
                          "UTC", None, Battery(5.0, 2000.0, 2000.0, 0.9, 2.5))
    battery = store.accept(HOME, problem, optimize(problem), "shems plan", now=now)
    at = page(db, "views/plan.py")
    at.button(key="cheap_plan").click().run()
    assert not at.error, [e.value for e in at.error]
    device = [p for p in store.plans(HOME) if p != battery]
    assert len(device) == 1
    assert store.plan(battery).status == "active"  # type: ignore[union-attr]
    assert {c.status for c in store.commands(battery)} == {"pending"}
    # A second device plan for the dishwasher replaces the first one, not the battery's.
    at.button(key="cheap_plan").click().run()
    assert store.plan(device[0]).status == "replaced"  # type: ignore[union-attr]
    assert store.plan(battery).status == "active"  # type: ignore[union-attr]


def test_the_page_refuses_a_device_that_never_ran(home):
    db = home
    db.execute("DELETE FROM device_1m")
    at = page(db, "views/plan.py")
    at.button(key="cheap_plan").click().run()
    assert any("has not run in the last 28 days" in shown(e.value) for e in at.error)
    assert PlanStore(db).plans(HOME) == []


# ------------------------------------------------------------------------------ the pure parts

def test_typical_run_is_the_median_run_and_pauses_inside_a_run_belong_to_it():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    minutes = [t0 + timedelta(minutes=m) for m in range(200)]
    power = [0.0] * 200
    for m in list(range(10, 40)) + list(range(42, 70)) + list(range(100, 160)):  # a 2-min pause at 40
        power[m] = 1200.0
    run = typical_run(minutes, power)
    assert run is not None and run.runs == 2 and run.duration == timedelta(minutes=60)
    assert typical_run(minutes, [0.0] * 200) is None


def test_cheapest_before_takes_tomorrows_deadline_when_todays_leaves_no_room():
    def flat(start, end, slot):
        n = round((end - start) / slot)
        return (0.2,) * n, (0.0,) * n

    now = datetime(2026, 12, 2, 6, 10, tzinfo=timezone.utc)  # 06:10 London, "before 07:00", 90 min
    problem, plan = cheapest_before("dishwasher", TypicalRun(1800.0, RUN, 7), now, time(7, 0),
                                    "Europe/London", flat)
    assert problem.loads[0].deadline == datetime(2026, 12, 3, 7, 0, tzinfo=timezone.utc)
    assert recommended_start(TITLE) == time(1, 0) and recommended_start("Cut the always-on load") is None


def test_next_local_skips_a_time_the_clocks_jump_over():
    before = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)  # London springs forward on 29 March
    assert next_local(before, time(1, 30), "Europe/London") == datetime(2026, 3, 30, 0, 30, tzinfo=timezone.utc)

