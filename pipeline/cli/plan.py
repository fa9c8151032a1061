"""``shems plan``: cheapest start times for deferrable loads."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.args import (
    battery_option,
    day,
    ev_option,
    existing_file,
    latitude,
    load_option,
    longitude,
    non_negative_float,
    positive_float,
    slot_minutes,
    store_url,
    timezone_name,
)
from pipeline.cli.common import cannot_open_store, fail
from pipeline.config import sqlite_path, store_kind


def cmd_plan(args) -> int:
    import json
    import math
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from pipeline.energy.optimize import PlanProblem, base_load_from_forecasts, optimize
    from pipeline.energy.plan_input import horizon, load_specs_from_toml, plan_start, resolve_ev, resolve_loads
    from pipeline.energy.solar import clear_sky_pv_w
    from pipeline.energy.tariff import price_frame

    try:
        book, home = _plan_prices(args)
        tz = args.tz or book.timezone(home)
        specs = list(args.load or []) + (load_specs_from_toml(args.loads) if args.loads else [])
        devices_note = _from_registry(args)
        if args.latitude is None or args.longitude is None:  # London unless told
            args.latitude = 51.5 if args.latitude is None else args.latitude
            args.longitude = -0.13 if args.longitude is None else args.longitude
        flexible = args.battery is not None or args.ev is not None or args.pv_kwp is not None
        if not specs and not flexible:
            raise ValueError("nothing to plan: give --load name,kwh,hours,earliest,deadline, --loads FILE, "
                             "--battery or --ev")
        day = args.date or datetime.now(ZoneInfo(tz)).date()
        slot = timedelta(minutes=args.slot_minutes)
        loads = resolve_loads(specs, day, tz)
        start, n = horizon(loads, slot) if loads else (None, 0)
        if flexible:
            # A day-ahead plan: from the day's midnight (--date) or the next slot, --hours long,
            # and long enough for every load and the EV's deadline.
            begin = plan_start(args.date, tz, datetime.now(timezone.utc), slot)
            end = begin + timedelta(hours=args.hours)
            if start is not None:
                end = max(end, start + slot * n)
                begin = min(begin, start)
            ev = resolve_ev(args.ev, begin, tz) if args.ev is not None else None
            if ev is not None:
                end = max(end, ev.deadline)
            start, n = begin, math.ceil((end - begin) / slot - 1e-9)
        else:
            ev = None
        assert start is not None
        prices = price_frame(book, home, start, start + slot * n, slot)
        if args.base_load_w is not None or not args.store_url:
            base, base_note = (args.base_load_w or 0.0,) * n, f"flat {args.base_load_w or 0:g} W"
        else:
            if not args.home:
                raise ValueError("--store-url reads a home's forecast: give --home too")
            base = base_load_from_forecasts(_stored_forecasts(args.store_url, args.home), start, slot, n)
            base_note = f"the newest forecast for {args.home}"
        pv = None
        if args.pv_kwp is not None:
            pv = clear_sky_pv_w(start, slot, n, args.pv_kwp, args.latitude, args.longitude)
            base_note += f"; PV {args.pv_kwp:g} kWp clear-sky at {args.latitude:g}, {args.longitude:g}"
        base_note += devices_note
        problem = PlanProblem(start, slot, tuple(prices["import_price"].to_list()), tuple(base), loads,
                              tuple(prices["export_price"].to_list()), args.power_limit_w, book.currency, tz,
                              pv, args.battery, ev)
        plan = optimize(problem)
        plan_id = _accept(args, problem, plan) if args.accept or args.propose else None
    except ValueError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(_plan_json(plan) | ({"plan_id": plan_id} if plan_id else {})))
    else:
        _print_plan(plan, problem, tz, base_note, book.tariff_at(home, start).describe())
        if plan_id:
            print(f"proposed as plan {plan_id}: accept it on the viewer's Plan page" if args.propose else
                  f"accepted as plan {plan_id}: `shems execute` carries it out")
    return 0


def _from_registry(args) -> str:
    """Fill --battery, --pv-kwp and --latitude/--longitude from the home's registry entries
    (``specs``, ``[[home]]``) where the command line does not give them; says what it took."""
    from pipeline.energy.plan_input import parse_battery_option
    from pipeline.ingest.registry import Registry
    from pipeline.records import DeviceKind

    if not (args.registry and args.home):
        return ""
    registry = Registry.load(args.registry)
    taken = []
    batteries = [e for e in registry.home_devices(args.home, DeviceKind.BATTERY) if e.specs]
    if args.battery is None and batteries:
        entry = batteries[0]
        given = dict(entry.specs)
        if "soc" not in given:
            given["soc"] = 0.5  # readings carry no state of charge: the middle, said in the note
        text = ",".join(f"{k}={v:g}" for k, v in sorted(given.items()))
        args.battery = parse_battery_option(text)
        args.battery_device = entry.device_id
        taken.append(f"battery {entry.device_id} ({text})")
    arrays = [e for e in registry.home_devices(args.home, DeviceKind.PV) if e.spec("kwp")]
    if args.pv_kwp is None and arrays:
        args.pv_kwp = sum(e.spec("kwp") or 0.0 for e in arrays)
        taken.append(f"PV {args.pv_kwp:g} kWp")
    location = registry.home_location(args.home)
    if location is not None and args.latitude is None and args.longitude is None:
        args.latitude, args.longitude = location
    return f"; from the registry: {', '.join(taken)}" if taken else ""


def _accept(args, problem, plan) -> str:
    """Store the plan: accepted (``shems execute`` carries it out; it replaces the home's active
    plan) or proposed (the household accepts it in the viewer)."""
    from ui.db import Database
    from ui.plans import PlanStore

    if not (args.store_url and args.home):
        raise ValueError("--accept and --propose store the plan: give --store-url and --home")
    if args.accept and args.propose:
        raise ValueError("give --accept or --propose, not both")
    try:
        db = Database(args.store_url, migrate=True)
    except Exception as exc:  # the driver's error, one line
        raise ValueError(cannot_open_store(args.store_url, exc)) from None
    try:
        store = PlanStore(db)
        keep = store.propose if args.propose else store.accept
        return keep(args.home, problem, plan, args.accepted_by,
                    battery_device=args.battery_device, ev_device=args.ev_device)
    finally:
        db.close()


def _plan_prices(args):
    from datetime import datetime, timezone

    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, book_from_toml, load_price_file

    if args.tariffs and args.prices:
        raise ValueError("give --tariffs or --prices, not both")
    if args.tariffs:
        return book_from_toml(args.tariffs), args.home or "*"
    if not args.prices and args.store_url:
        return _stored_book(args.store_url), args.home or "*"
    if not args.prices:
        raise ValueError("no prices: give --tariffs FILE (a tariff book), --prices FILE (ts, import_price[, "
                         "export_price]) or --store-url (the tariffs `shems run --tariffs` stored)")
    series = load_price_file(args.prices)
    tariff = Tariff(datetime.fromtimestamp(series.first_s, timezone.utc), TariffKind.DYNAMIC, args.currency,
                    args.tz or "UTC", args.prices.name, None, args.export_price, prices=series)
    return TariffBook(args.currency, (tariff,)), "*"


def _stored_book(url: str):
    from pipeline.energy.tariff import TariffBook
    from sinks.base import mask_url
    from sinks.stores import open_store

    if store_kind(url) == "sqlite" and not Path(sqlite_path(url)).is_file():
        raise ValueError(f"no SQLite store at {sqlite_path(url)}")
    store = open_store(url)
    try:
        rows = store.tariffs()
    except Exception as exc:  # the store's driver error, e.g. a missing table
        raise ValueError(f"cannot read tariffs from {mask_url(url)}: {exc}") from None
    finally:
        store.close()
    if not rows:
        raise ValueError(f"no tariffs stored in {mask_url(url)}: give --tariffs FILE")
    return TariffBook.from_rows(rows)


def _stored_forecasts(url: str, home: str):
    from sinks.base import mask_url
    from sinks.stores import open_store

    if store_kind(url) == "sqlite" and not Path(sqlite_path(url)).is_file():
        raise ValueError(f"no SQLite store at {sqlite_path(url)}")
    store = open_store(url)
    try:
        try:
            rows = store.forecasts(home_id=home)
        except Exception as exc:  # the store's driver error, e.g. a missing table
            raise ValueError(f"cannot read forecasts from {mask_url(url)}: {exc}") from None
    finally:
        store.close()
    return rows


def _plan_json(plan) -> dict:
    return {
        "currency": plan.currency, "cost": plan.cost, "baseline_cost": plan.baseline_cost,
        "saving": plan.saving, "peak_w": plan.peak_w, "baseline_peak_w": plan.baseline_peak_w,
        "power_limit_w": plan.power_limit_w, "baseline_within_limit": plan.baseline_within_limit,
        "solver": plan.solver,
        "loads": [{"name": s.name, "start": s.start.isoformat(), "end": s.end.isoformat(),
                   "slots": [t.isoformat() for t in s.slots], "energy_kwh": s.energy_kwh, "cost": s.cost,
                   "earliest_start": s.earliest_start.isoformat(), "baseline_cost": s.baseline_cost}
                  for s in plan.loads],
        # Per slot: what the plan does, then what happens without it (the baseline's cost).
        "schedule": [_slot_json(x) for x in plan.schedule],
        "baseline_schedule": [_slot_json(x) for x in plan.baseline_schedule],
    }


def _slot_json(x) -> dict:
    return {"start": x.start.isoformat(), "import_price": x.import_price, "export_price": x.export_price,
            "base_w": round(x.base_w, 3), "pv_w": round(x.pv_w, 3), "loads_w": round(x.loads_w, 3),
            "battery_w": round(x.battery_w, 3),
            "soc_kwh": None if x.soc_kwh is None else round(x.soc_kwh, 4),
            "ev_w": round(x.ev_w, 3), "grid_w": round(x.grid_w, 3)}


def _print_plan(plan, problem, tz: str, base_note: str, tariff_note: str) -> None:
    from zoneinfo import ZoneInfo

    from rich.console import Console
    from rich.table import Table

    zone = ZoneInfo(tz)
    cur = plan.currency

    def at(ts) -> str:
        return ts.astimezone(zone).strftime("%a %H:%M")

    windows = {load.name: f"{at(load.earliest)}–{at(load.deadline)}" for load in problem.loads}
    table = Table(title=f"Schedule ({tz}, {problem.slot.total_seconds() / 60:g}-minute slots, {cur})")
    table.add_column("load", no_wrap=True)
    table.add_column("kWh", justify="right")
    table.add_column("window", no_wrap=True)
    for column in ("start", "end", "cost", "at earliest"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in plan.loads:
        table.add_row(s.name, f"{s.energy_kwh:.2f}", windows[s.name], at(s.start), at(s.end),
                      f"{s.cost:.2f}", f"{s.baseline_cost:.2f}")
    console = Console()
    if plan.loads:
        console.print(table)
    if any(x.battery_w or x.ev_w or x.pv_w for x in plan.schedule):
        flex = Table(title=f"Battery, EV and PV ({tz}; + charging, - discharging; grid + import, - export)")
        for column in ("slot", "price", "PV W", "battery W", "state of charge kWh", "EV W", "grid W"):
            flex.add_column(column, justify="right", no_wrap=True)
        for x in plan.schedule:
            if x.battery_w or x.ev_w or x.pv_w:
                flex.add_row(at(x.start), f"{x.import_price:.3f}", f"{x.pv_w:,.0f}", f"{x.battery_w:,.0f}",
                             "" if x.soc_kwh is None else f"{x.soc_kwh:.2f}", f"{x.ev_w:,.0f}", f"{x.grid_w:,.0f}")
        console.print(flex)
    console.print(f"prices: {tariff_note}; base load: {base_note}"
                  + (f"; limit {plan.power_limit_w:,.0f} W (peak {plan.peak_w:,.0f} W)"
                     if plan.power_limit_w else ""))
    share = f" ({plan.saving / plan.baseline_cost:.0%})" if plan.baseline_cost > 0 else ""
    console.print(f"cost with this plan {plan.cost:.2f} {cur}; without it (loads at their earliest start, "
                  "battery idle, EV charging at once) "
                  f"{plan.baseline_cost:.2f} {cur}"
                  + ("" if plan.baseline_within_limit else " (over the limit)")
                  + f"; [bold]saving {plan.saving:.2f} {cur}{share}[/bold]")


def register(sub) -> None:
    p = sub.add_parser("plan", help="cheapest start times for deferrable loads (washing, dishwasher, EV)")
    p.add("--tariffs", type=existing_file, help="tariff book TOML (see deploy/tariffs.example.toml)")
    p.add("--home", default=None, help="the home whose tariff (and forecast, with --store-url) to use")
    p.add("--prices", type=existing_file, help="price file instead of a book: ts (UTC), import_price[, export_price]")
    p.add("--currency", default="", help="currency of --prices")
    p.add("--export-price", type=non_negative_float, default=0.0,
          help="export price per kWh for --prices files without an export_price column")
    # Repeatable, so no environment default (one variable cannot hold a list of loads).
    p.add_argument("--load", action="append", type=load_option,
                   help="name,kwh,hours,earliest,deadline (repeatable), e.g. dishwasher,1.2,2,19:00,07:00")
    p.add("--loads", type=existing_file, help="loads TOML ([[load]] name, energy_kwh|power_w, hours, earliest, deadline)")
    p.add("--date", type=day, default=None, help="the day HH:MM times refer to (default: today)")
    p.add("--tz", type=timezone_name, default=None, help="time zone of HH:MM times (default: the tariff's)")
    p.add("--slot-minutes", type=slot_minutes, default=15, help="slot length: 15, 30 or 60")
    p.add("--base-load-w", type=non_negative_float, default=None,
          help="flat base load in W (default 0, or the newest forecast with --store-url)")
    p.add("--store-url", type=store_url, default=None, help="store to read --home's newest forecast from")
    p.add("--power-limit-w", type=positive_float, default=None, help="household power limit in W")
    p.add("--battery", type=battery_option, default=None,
          help="a home battery: capacity_kwh=10,power_kw=5,efficiency=0.9,soc=0.5 (shares of capacity; "
               "optional min_soc, max_soc, end_soc, charge_kw, discharge_kw)")
    p.add("--ev", type=ev_option, default=None,
          help="an EV charge: energy_kwh=20,power_kw=7.4,deadline=07:00 (optional earliest=18:00, min_power_kw)")
    p.add("--pv-kwp", type=non_negative_float, default=None,
          help="PV array peak power in kWp: a clear-sky forecast at --latitude/--longitude")
    p.add("--latitude", type=latitude, default=None,
          help="the home's latitude for the PV forecast (default: the registry's [[home]], else 51.5)")
    p.add("--longitude", type=longitude, default=None,
          help="the home's longitude for the PV forecast (default: the registry's [[home]], else -0.13)")
    p.add("--registry", type=existing_file, default=None,
          help="device registry TOML: --home's battery and PV specs and location, where not given here")
    p.add("--hours", type=positive_float, default=24.0,
          help="horizon of a battery/EV/PV plan, from --date's midnight or the next slot")
    p.add("--json", action="store_true", help="print the plan as JSON")
    p.add("--accept", action="store_true",
          help="store the plan in --store-url for --home: `shems execute` sends its commands")
    p.add("--propose", action="store_true",
          help="store the plan in --store-url for --home to be accepted on the viewer's Plan page")
    p.add("--accepted-by", default="cli", help="who accepted (or proposed) the plan (recorded with it)")
    p.add("--battery-device", default="battery", help="the home's device id of the battery")
    p.add("--ev-device", default="ev", help="the home's device id of the EV charger")
    p.set_defaults(handler=cmd_plan)
