"""``shems bill``: a home's bill for a month from the store, as the viewer's Bill page shows it
(so far and projected, line by line, the budget and its alert), for a terminal or a cron job."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone

from pipeline.cli.args import add_store_arg
from pipeline.cli.common import cannot_open_store, fail


def _month(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise argparse.ArgumentTypeError(f"a month is YYYY-MM, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def cmd_bill(args: argparse.Namespace) -> int:
    from pipeline.energy.bill import Bill, budget_alert, month_bill, month_of, month_span
    from sinks.base import mask_url
    from ui import energy
    from ui.auth import Principal, Role
    from ui.cost import load_pricing
    from ui.db import Database
    from ui.settings import load_settings

    try:
        db = Database(args.store_url, migrate=True)
    except Exception as exc:
        return fail(cannot_open_store(args.store_url, exc))
    try:
        settings = load_settings()
        cli = Principal("cli", Role.ADMIN, frozenset())
        newest = energy.newest_minute(db, cli, args.home)
        if newest is None:
            return fail(f"no readings of home {args.home!r} in the store {mask_url(args.store_url)}")
        terms = energy.bill_tariffs(load_pricing(db, settings), args.home, settings.timezone)
        tz = terms.timezone
        as_of = min(newest, datetime.now(timezone.utc))
        if args.month:
            year, month = args.month
            start, end = month_span(year, month, tz)
            if start >= as_of:
                return fail(f"home {args.home!r} has no readings in {args.month[0]:04d}-{args.month[1]:02d}")
            as_of = min(as_of, end)
        else:
            year, month = month_of(as_of, tz)
            start, _ = month_span(year, month, tz)
        actual = energy.home_minutes(db, cli, args.home, min(start, as_of - timedelta(days=14)), as_of)
        mb = month_bill(terms.history, actual, energy.newest_forecasts(db, cli, args.home, as_of), as_of, tz,
                        args.home)
        saved = energy.budget(db, cli, args.home)
    except ValueError as exc:
        return fail(str(exc))
    finally:
        db.close()
    cur, loc = mb.to_date.currency, energy.locale_of(None, args.locale or settings.locale)

    def money(value) -> str:
        return energy.fmt_money(value, cur, loc)

    def show(title: str, b: Bill) -> None:
        print(f"{title}: {b.first_day} to {b.last_day} ({b.days} day{'s' if b.days != 1 else ''})")
        for line in b.lines:
            qty = energy.fmt_quantity(line.quantity, line.unit, loc)
            print(f"  {line.label:<40} {qty:>14} x {energy.fmt_rate(line.rate, cur, loc):>12} {money(line.amount):>12}")
        print(f"  {'Charges':<71} {money(b.subtotal):>12}")
        for t in b.taxes:
            print(f"  {f'Tax at {float(t.rate) * 100:g} % of {money(t.base)}':<71} {money(t.amount):>12}")
        print(f"  {'Total':<71} {money(b.total):>12}")
        for line in b.exports:
            print(f"  {line.label:<40} {energy.fmt_quantity(line.quantity, 'kWh', loc):>14} x "
                  f"{energy.fmt_rate(line.rate, cur, loc):>12} "
                  f"{money(line.amount):>12}")
        if b.exports:
            print(f"  {'Due':<71} {money(b.due):>12}")

    print(f"Home {args.home}, {mb.month} ({tz}); {terms.note}")
    show("So far" if mb.basis.value != "complete" else "Month", mb.to_date)
    if mb.basis.value != "complete":
        show("Projected", mb.projected)
        print(mb.basis_text)
    alert = budget_alert(mb, saved.amount if saved and saved.currency == cur else None,
                         datetime.now(timezone.utc), loc)
    if saved is None:
        print("No monthly budget set (the household sets it on the viewer's Bill page).")
    elif alert is None:
        print(f"Within the monthly budget of {money(saved.amount)}.")
    else:
        print(alert.message)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bill", help="a home's bill this month (so far, projected, budget) from the store")
    add_store_arg(p, "the store to read")
    p.add("--home", required=True, help="the home's id")
    p.add("--month", type=_month, default=None,
          help="YYYY-MM; default: the month of the home's newest reading")
    p.add("--locale", default=None, help="money format, e.g. en_GB, de_DE (default SHEMS_UI_LOCALE or en_GB)")
    p.set_defaults(handler=cmd_bill)
