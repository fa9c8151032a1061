"""Every public function of the viewer's data and control layers, found by inspection, either
takes the signed-in principal and refuses a homeowner another home's data, or is listed below
with the reason it needs no such check. A function added later is in neither list until someone
decides which it is: this test fails until then."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType

import pytest

import pipeline.cli.viewer
import ui.accounts
import ui.charts
import ui.control
import ui.cost
import ui.data
import ui.db
import ui.energy
import ui.notifications
import ui.plans
from pipeline.records import (
    AckStatus,
    CommandAck,
    CommandState,
    DeviceKind,
    DeviceWindow,
    HomeWindow,
    Reading,
    Recommendation,
)
from pipeline.tools.broker import free_port
from sinks.base import Batch
from sinks.stores import open_store
from ui.accounts import Accounts
from ui.auth import AccessDenied, Principal, Role
from ui.cost import Pricing
from ui.db import Database
from ui.settings import ViewerSettings

LAYERS: list[ModuleType] = [ui.data, ui.control, ui.db, ui.cost, pipeline.cli.viewer, ui.accounts,
                          ui.charts, ui.notifications, ui.energy, ui.plans]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(minutes=10)
PRICING = Pricing("GBP", 0.30, "flat 0.30 GBP/kWh")
ALICE = Principal("alice", Role.HOMEOWNER, frozenset({"a"}))
OLGA = Principal("olga", Role.OPERATOR, frozenset())

# Each function that takes a principal, called for ``home`` by ``who``. Only ``home`` changes
# between the call that must work (her own) and the one that must be refused (the other).
HOME_CALLS = {
    "ui.data.home_timezone": lambda c, who, home: ui.data.home_timezone(c.db, who, home, "UTC"),
    "ui.data.devices_now": lambda c, who, home: ui.data.devices_now(c.db, who, home),
    "ui.data.history": lambda c, who, home: ui.data.history(c.db, who, home, T0, NOW, None, "UTC",
                                                            PRICING),
    "ui.data.live": lambda c, who, home: ui.data.live(c.db, who, home, NOW, "UTC", PRICING, 600),
    "ui.data.forecast_resolutions": lambda c, who, home: ui.data.forecast_resolutions(c.db, who, home),
    "ui.data.forecast": lambda c, who, home: ui.data.forecast(c.db, who, home, 60, NOW),
    "ui.data.anomalies": lambda c, who, home: ui.data.anomalies(c.db, who, home, NOW),
    "ui.data.recommendations": lambda c, who, home: ui.data.recommendations(c.db, who, home),
    "ui.data.newest_reading": lambda c, who, home: ui.data.newest_reading(c.db, who, home),
    "ui.data.acknowledge": lambda c, who, home: ui.data.acknowledge(
        c.db, c.accounts, who, home, [{"device_id": "kettle", "kind": "long_running", "started_at": T0}]),
    "ui.data.decide_recommendation": lambda c, who, home: ui.data.decide_recommendation(
        c.db, c.accounts, who, home, "standby_waste", "", "accepted"),
    "ui.data.measured_savings": lambda c, who, home: ui.data.measured_savings(c.db, who, home),
    "ui.control.send_command": lambda c, who, home: ui.control.send_command(
        c.db, c.accounts, c.settings, who, home, "kettle", CommandState.OFF),
    "ui.control.command_status": lambda c, who, home: ui.control.command_status(
        c.db, who, f"c-{home}", NOW, c.settings),
    "ui.control.recent_commands": lambda c, who, home: ui.control.recent_commands(c.db, who, home),
    "ui.control.switched_off_but_drawing": lambda c, who, home: ui.control.switched_off_but_drawing(
        ui.data.devices_now(c.db, OLGA, home), c.db, who, home, 5.0),
    "ui.energy.newest_minute": lambda c, who, home: ui.energy.newest_minute(c.db, who, home),
    "ui.energy.home_minutes": lambda c, who, home: ui.energy.home_minutes(c.db, who, home, T0, NOW),
    "ui.energy.newest_forecasts": lambda c, who, home: ui.energy.newest_forecasts(c.db, who, home, T0),
    "ui.energy.device_usage": lambda c, who, home: ui.energy.device_usage(c.db, who, home, T0, NOW),
    "ui.energy.flow_usage": lambda c, who, home: ui.energy.flow_usage(c.db, who, home, T0, NOW, 60),
    "ui.energy.budget": lambda c, who, home: ui.energy.budget(c.db, who, home),
    "ui.energy.set_budget": lambda c, who, home: ui.energy.set_budget(
        c.db, c.accounts, who, home, Decimal("50"), "GBP", NOW),
    "ui.energy.month_bill_of": lambda c, who, home: ui.energy.month_bill_of(c.db, who, PRICING, home, "UTC", NOW),
}
# Functions that take a principal but no home: what they return must hold nothing of another home.
FLEET_CALLS = {
    "ui.data.homes_for": lambda c, who: ui.data.homes_for(c.db, who),
    "ui.data.fleet": lambda c, who: ui.data.fleet(c.db, who, NOW, 600, 600),
    "ui.data.fleet_homes": lambda c, who: ui.data.fleet_homes(c.db, who, NOW, 600),
    "ui.data.home_choices": lambda c, who: ui.data.home_choices(c.db, who, include="b"),
    "ui.data.audit_log": lambda c, who: ui.data.audit_log(c.db, who),
    "ui.data.fleet_savings": lambda c, who: ui.data.fleet_savings(c.db, who),
}
# No principal, and why none is needed.
NO_PRINCIPAL = {
    **{f"ui.data.{n}": "pure: computes on frames or dates already read under a check"
       for n in ("home_power", "with_unmetered", "pick_resolution", "base_load", "local_midnight",
                 "day_range", "grouped_alerts")},
    "ui.control.assess": "pure: judges a command from its acks, read under command_status's check",
    **{f"ui.db.{n}": "the SQL layer itself: callers check the principal before their query"
       for n in ("Database.us", "Database.connection", "Database.transaction", "Database.frame",
                 "Database.rows", "Database.execute", "Database.close", "Transaction.rows",
                 "Transaction.execute", "Transaction.frame")},
    "ui.cost.load_pricing": "the tariff book, server side; never shown except through a checked read",
    "ui.cost.Pricing.price": "pure: prices a frame already read under a check",
    "ui.cost.Pricing.mean_import_price": "pure: the in-memory book, for a home history() checked",
    "pipeline.cli.viewer.cmd_ui": "the `shems ui` command line: starts the server",
    "pipeline.cli.viewer.cmd_user": "the `shems user` command line: whoever runs it owns the store",
    "pipeline.cli.viewer.register_ui": "adds the `shems ui` parser: no data",
    "pipeline.cli.viewer.register_user": "adds the `shems user` parser: no data",
    **{f"ui.accounts.{n}": "accounts, sessions and sign-in: the identity the checks rely on; the "
       "Users page calls require_admin before any of them"
       for n in ("utcnow", "validate_username", "validate_password", "Accounts.add_user",
                 "Accounts.remove_user", "Accounts.set_password", "Accounts.set_access",
                 "Accounts.users", "Accounts.principal", "Accounts.sign_in", "Accounts.resume",
                 "Accounts.sign_out", "Accounts.audit")},
    **{f"ui.notifications.NotifyStore.{n}": "the signed-in user's own notification settings: the "
       "Account page passes p.username, never a name from the request"
       for n in ("targets", "add_target", "remove_target", "prefs", "set_prefs", "history")},
    **{f"ui.notifications.NotifyStore.{n}": "the notifier (`shems notify`, server side): a notice is "
       "queued only for members of its home (user_homes), tested in tests/test_notify.py"
       for n in ("home_timezone", "cursor", "set_cursor", "anomalies_since", "recommendations_since",
                 "notices_since", "enqueue", "enqueue_budget", "pending", "record_attempt")},
    **{f"ui.notifications.{n}": "pure, or sending a notice to targets already read for their owner"
       for n in ("utcnow", "Prefs.quiet_hours", "apprise_send", "send_to_targets")},
    **{f"ui.energy.{n}": "pure: formats, periods, tariffs in memory, or draws a flow already read "
       "under a check" for n in ("locale_of", "fmt_money", "fmt_quantity", "fmt_rate", "bill_tariffs",
                                 "parse_amount", "period_range", "sankey", "flow_table")},
    "ui.energy.budget_alerts": "the notifier (`shems notify`, server side): every home with a budget; "
                               "its alerts are queued only for members of the home, tested in "
                               "tests/test_notify.py",
    **{f"ui.charts.{n}": "pure: draws a frame already read under a check"
       for n in ("stacked_usage", "cost_by_device", "period_comparison", "daily_heatmap",
                 "weekly_heatmap", "recent_power", "device_power", "forecast_chart",
                 "forecast_errors", "fleet_demand", "with_gaps", "plan_vs_actual")},
    **{f"ui.plans.{n}": "plans: `shems plan --accept`/`--propose` and `shems execute` (server side); "
       "the Plan page calls require_home(p, home) before any of them and passes only that home"
       for n in ("PlanStore.accept", "PlanStore.propose", "PlanStore.activate", "PlanStore.plan",
                 "PlanStore.plans", "PlanStore.commands", "PlanStore.set_status", "PlanStore.set_plan_status",
                 "PlanStore.supersede", "PlanStore.ack", "PlanStore.samples", "PlanStore.device",
                 "PlanStore.meter", "PlanStore.record_sent", "planned_vs_actual")},
    **{f"ui.plans.{n}": "pure: a slot as JSON, or the cost of a slot already read"
       for n in ("slot_json", "SlotActual.cost")},
}


def public_functions() -> dict[str, inspect.Signature]:
    """Module-level functions and public methods of classes defined in the layers."""
    found = {}
    for module in LAYERS:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                found[f"{module.__name__}.{name}"] = inspect.signature(obj)
            elif inspect.isclass(obj):
                for member, attr in vars(obj).items():
                    fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
                    if not member.startswith("_") and inspect.isfunction(fn):
                        found[f"{module.__name__}.{name}.{member}"] = inspect.signature(fn)
    return found


class Ctx:
    def __init__(self, db: Database, accounts: Accounts, settings: ViewerSettings) -> None:
        self.db, self.accounts, self.settings = db, accounts, settings


@pytest.fixture
def ctx(store_url):
    """Homes a and b alike: devices, minutes, a recommendation, a command with its answer."""
    batch = Batch()
    for home in ("a", "b"):
        batch.readings += [Reading(home, "mains", T0, 500.0, kind=DeviceKind.METER),
                           Reading(home, "kettle", T0, 200.0)]
        for i in range(10):
            t = T0 + timedelta(minutes=i)
            batch.device_windows += [
                DeviceWindow(home, "mains", DeviceKind.METER, t, 500.0, 500, 500, 500 / 60, 1),
                DeviceWindow(home, "kettle", DeviceKind.APPLIANCE, t, 200.0, 200, 200, 200 / 60, 1)]
            batch.home_windows.append(HomeWindow(home, t, 500.0, 500, 500, 500 / 60, 1))
        batch.recommendations.append(Recommendation(home, "", "standby_waste", T0, "t", "d", 1.0,
                                                    0.3, "GBP"))
        batch.command_acks.append(CommandAck(home, "kettle", f"c-{home}", AckStatus.APPLIED,
                                             CommandState.OFF, T0, T0))
    store = open_store(store_url)
    try:
        store.migrate()
        store.write(batch)
    finally:
        store.close()
    db = Database(store_url)
    for home in ("a", "b"):
        db.execute("INSERT INTO device_commands (command_id, home_id, device_id, state, run_at, "
                   "issued_by, issued_at) VALUES (:c, :h, 'kettle', 'off', NULL, 'x', :at)",
                   {"c": f"c-{home}", "h": home, "at": T0})
    # A broker nobody listens on: a command that got past the home check would fail differently.
    settings = ViewerSettings(mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    yield Ctx(db, Accounts(db, settings), settings)
    db.close()


def test_every_public_function_is_classified():
    found = public_functions()
    takes_principal = {name for name, sig in found.items() if "principal" in sig.parameters}
    assert takes_principal == set(HOME_CALLS) | set(FLEET_CALLS), (
        "classify these in HOME_CALLS / FLEET_CALLS: "
        f"{sorted(takes_principal ^ (set(HOME_CALLS) | set(FLEET_CALLS)))}")
    rest = set(found) - takes_principal
    assert rest == set(NO_PRINCIPAL), (
        f"classify these in NO_PRINCIPAL (with a reason) or give them a principal: "
        f"{sorted(rest ^ set(NO_PRINCIPAL))}")
    # Whatever touches the store per home takes a principal (only the SQL layer itself, the
    # tariff loader and account management read the store without one).
    store_readers = {name for name, sig in found.items() if "db" in sig.parameters}
    assert store_readers - takes_principal == {"ui.cost.load_pricing", "ui.energy.budget_alerts"}


@pytest.mark.parametrize("name", sorted(HOME_CALLS))
def test_each_home_function_refuses_a_homeowner_another_home(ctx, name):
    call = HOME_CALLS[name]
    with pytest.raises(AccessDenied):
        call(ctx, ALICE, "b")
    # A home that does not exist reads the same as another's.
    with pytest.raises(AccessDenied):
        call(ctx, ALICE, "zz")
    # The same call for her own home is not refused (so the refusal above is about the home, not
    # about the arguments); sending a command gets as far as the missing broker.
    try:
        call(ctx, ALICE, "a")
    except ui.control.CommandRefused as exc:
        assert name == "ui.control.send_command" and "Could not reach the message broker" in str(exc)
    # Nothing was written for home b by the refused calls.
    assert ctx.db.rows("SELECT status FROM recommendations WHERE home_id = 'b'") == [("new",)]
    assert ctx.db.rows("SELECT count(*) FROM device_commands WHERE home_id = 'b'") == [(1,)]
    assert ctx.db.rows("SELECT count(*) FROM anomaly_acks WHERE home_id <> 'a'") == [(0,)]


def test_fleet_wide_functions_give_a_homeowner_nothing_of_another_home(ctx):
    assert FLEET_CALLS["ui.data.homes_for"](ctx, ALICE) == ["a"]
    assert FLEET_CALLS["ui.data.homes_for"](ctx, OLGA) == ["a", "b"]
    # Asked to include home b, a homeowner of a alone still gets only a.
    assert FLEET_CALLS["ui.data.home_choices"](ctx, ALICE) == ["a"]
    assert FLEET_CALLS["ui.data.home_choices"](ctx, OLGA) == ["a", "b"]
    for name in ("ui.data.fleet", "ui.data.fleet_homes", "ui.data.audit_log"):
        with pytest.raises(AccessDenied):
            FLEET_CALLS[name](ctx, ALICE)
    assert FLEET_CALLS["ui.data.fleet"](ctx, OLGA).homes_total == 2
    assert FLEET_CALLS["ui.data.fleet_homes"](ctx, OLGA).total == 2
