"""``shems execute --registry``: every hour a home with a battery spec gets a fresh 24-hour plan
from the next slot, starting from the charge its battery was measured to reach (issue 14).
Real store (SQLite and PostgreSQL), the executor's own poll; the send callable collects what
would go to the broker."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, TouPeriod
from pipeline.ingest.registry import Registry
from pipeline.records import DeviceKind, Forecast, Reading
from pipeline.tools.plan_executor import PlanExecutor
from pipeline.tools.receding import BY, RecedingHorizon
from sinks.base import Batch
from sinks.stores import open_store
from ui.db import Database
from ui.plans import PlanStore

NOW = datetime(2026, 12, 2, 12, 7, tzinfo=timezone.utc)  # London is on UTC in December
REGISTRY = """
[[device]]
source = "native"
vendor_id = "h1-battery"
home_id = "h1"
device_id = "battery"
kind = "battery"
specs = { capacity_kwh = 10, power_kw = 5, efficiency = 0.9, soc = 0.5 }

[[device]]
source = "native"
vendor_id = "h2-battery"
home_id = "h2"
device_id = "battery"
kind = "battery"

[[home]]
home_id = "h1"
timezone = "Europe/London"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'shems.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    store.migrate()
    economy7 = Tariff(datetime(2013, 1, 1, tzinfo=timezone.utc), TariffKind.TOU, "GBP", "Europe/London",
                      "Economy 7", 0.28, periods=(TouPeriod("night", 30, 7 * 60 + 30, 0.09),))
    made = NOW.replace(minute=0)
    try:
        store.upsert_tariffs(TariffBook("GBP", (economy7,)).to_rows())
        store.write(Batch(forecasts=[Forecast("h1", made, made + timedelta(hours=i), 60, 60 * (i + 1), 600.0,
                                              400.0, 800.0, "test") for i in range(24)]))
    finally:
        store.close()
    database = Database(url)
    yield database
    database.close()


def test_a_battery_home_is_planned_every_hour_from_its_measured_charge(db, tmp_path):
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY)
    sent: list[tuple[str, bytes]] = []
    executor = PlanExecutor(db, lambda t, p: sent.append((t, p)), receding=RecedingHorizon(db, Registry.load(path)))
    store = PlanStore(db)

    first = executor.poll(NOW).replanned
    assert len(first) == 1  # h1 only: h2's battery has no specs
    p1 = store.plan(first[0])
    assert p1 is not None and p1.status == "active" and p1.accepted_by == BY and p1.scope is None
    assert p1.home_id == "h1" and p1.battery_device == "battery"
    assert p1.problem.start == datetime(2026, 12, 2, 12, 15, tzinfo=timezone.utc)
    assert p1.problem.slots == 96 and p1.problem.battery is not None
    assert p1.problem.battery.soc_kwh == pytest.approx(5.0)
    assert set(p1.problem.base_load_w) == {600.0}  # the forecast, its last hour's gap filled
    setpoints = [c.command for c in store.commands(p1.plan_id) if c.command.value_w]
    night = [c for c in setpoints if 0 <= c.run_at.hour < 7]
    assert setpoints and all(c.value_w < 0 for c in setpoints if c not in night)  # by day it discharges
    assert any(c.value_w > 0 for c in night)  # and recharges on the cheap night

    assert executor.poll(NOW + timedelta(minutes=30)).replanned == ()  # not due yet

    # The battery was measured charging at 2 kW for the plan's first half hour, then idle.
    start = p1.problem.start
    store_w = open_store(db.url)
    try:
        store_w.write(Batch(readings=[
            Reading("h1", "battery", start + timedelta(minutes=m), 2000.0 if m < 30 else 0.0, kind=DeviceKind.BATTERY)
            for m in range(53)]))
    finally:
        store_w.close()
    second = executor.poll(NOW + timedelta(minutes=61)).replanned
    assert len(second) == 1
    p2 = store.plan(second[0])
    assert p2 is not None and p2.replaces == p1.plan_id and p2.status == "active"
    assert store.plan(p1.plan_id).status == "replaced"  # type: ignore[union-attr]
    assert p2.problem.start == datetime(2026, 12, 2, 13, 15, tzinfo=timezone.utc)
    assert p2.problem.battery is not None
    assert p2.problem.battery.soc_kwh == pytest.approx(5.0 + 1.0 * math.sqrt(0.9), rel=1e-6)
    old_after = [c for c in store.commands(p1.plan_id) if c.command.run_at >= p2.problem.start]
    assert old_after and {c.status for c in old_after} == {"superseded"}


def test_a_home_without_prices_is_skipped_and_tried_again(db, tmp_path):
    db.execute("DELETE FROM tariffs")
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY)
    receding = RecedingHorizon(db, Registry.load(path))
    assert receding.poll(NOW) == []
    assert PlanStore(db).plans("h1") == []
