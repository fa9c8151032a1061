"""``shems plan``: cheapest start times for deferrable loads."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.args import (
    day,
    existing_file,
    load_option,
    non_negative_float,
    positive_float,
    slot_minutes,
    store_url,
    timezone_name,
)
from pipeline.cli.common import fail
from pipeline.config import sqlite_path, store_kind


def cmd_plan(args) -> int:
    import json
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from pipeline.energy.optimize import PlanProblem, base_load_from_forecasts, optimize
    from pipeline.energy.plan_input import horizon, load_specs_from_toml, resolve_loads
    from pipeline.energy.tariff import price_frame

    try:
        book, home = _plan_prices(args)
        tz = args.tz or book.timezone(home)
        specs = list(args.load or []) + (load_specs_from_toml(args.loads) if args.loads else [])
        if not specs:
            raise ValueError("no loads to plan: give --load name,kwh,hours,earliest,deadline or --loads FILE")
        day = args.date or datetime.now(ZoneInfo(tz)).date()
        slot = timedelta(minutes=args.slot_minutes)
        loads = resolve_loads(specs, day, tz)
        start, n = horizon(loads, slot)
        prices = price_frame(book, home, start, start + slot * n, slot)
        if args.base_load_w is not None or not args.store_url:
            base, base_note = (args.base_load_w or 0.0,) * n, f"flat {args.base_load_w or 0:g} W"
        else:
            if not args.home:
                raise ValueError("--store-url reads a home's forecast: give --home too")
            base = base_load_from_forecasts(_stored_forecasts(args.store_url, args.home), start, slot, n)
            base_note = f"the newest forecast for {args.home}"
        problem = PlanProblem(start, slot, tuple(prices["import_price"].to_list()), tuple(base), loads,
                              tuple(prices["export_price"].to_list()), args.power_limit_w, book.currency, tz)
        plan = optimize(problem)
    except ValueError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(_plan_json(plan)))
    else:
        _print_plan(plan, problem, tz, base_note, book.tariff_at(home, start).describe())
    return 0


def _plan_prices(args):
    from datetime import datetime, timezone

    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, book_from_toml, load_price_file

    if args.tariffs and args.prices:
        raise ValueError("give --tariffs or --prices, not both")
    if args.tariffs:
        return book_from_toml(args.tariffs), args.home or "*"
    if not args.prices:
        raise ValueError("no prices: give --tariffs FILE (a tariff book) or --prices FILE (ts, import_price[, export_price])")
    series = load_price_file(args.prices)
    tariff = Tariff(datetime.fromtimestamp(series.first_s, timezone.utc), TariffKind.DYNAMIC, args.currency,
                    args.tz or "UTC", args.prices.name, None, args.export_price, prices=series)
    return TariffBook(args.currency, (tariff,)), "*"


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
    }


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
    console.print(table)
    console.print(f"prices: {tariff_note}; base load: {base_note}"
                  + (f"; limit {plan.power_limit_w:,.0f} W (peak {plan.peak_w:,.0f} W)"
                     if plan.power_limit_w else ""))
    share = f" ({plan.saving / plan.baseline_cost:.0%})" if plan.baseline_cost > 0 else ""
    console.print(f"cost with this plan {plan.cost:.2f} {cur}; every load at its earliest start "
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
    p.add("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=cmd_plan)
