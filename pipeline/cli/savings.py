"""``shems savings``: what accepted recommendations measurably saved, per recommendation and fleet."""

from __future__ import annotations

from pipeline.cli.args import store_url
from pipeline.cli.common import check_store_reachable, fail


def cmd_savings(args) -> int:
    import json

    from pipeline.tools.savings_report import measure_store

    problem = check_store_reachable(args.store_url)
    if problem:
        return fail(problem)
    results, fleet = measure_store(args.store_url, args.home)
    if args.json:
        print(json.dumps({
            "recommendations": [_json(m) for m in results],
            "fleet": {"measured": fleet.measured, "total_money": fleet.total_money,
                      "total_kwh": fleet.total_kwh,
                      "median_money_per_month": fleet.median_money_per_month,
                      "p10_money_per_month": fleet.p10_money_per_month,
                      "p90_money_per_month": fleet.p90_money_per_month,
                      "promises_kept": fleet.promises_kept, "significant": fleet.significant},
        }))
        return 0
    _print(results, fleet)
    return 0


def _json(m) -> dict:
    s = m.savings
    return {
        "home_id": m.home_id, "device_id": m.device_id, "kind": m.kind, "title": m.title,
        "accepted_at": m.accepted_at.isoformat(), "state": m.state, "note": m.note,
        "promised_money_per_month": m.promised_money_per_month, "currency": m.currency,
        "days": s.days if s else None, "saved_kwh": s.saved_kwh if s else None,
        "uncertainty_kwh": s.uncertainty_kwh if s else None, "money": s.money if s else None,
        "money_uncertainty": s.money_uncertainty if s else None,
        "money_per_month": m.money_per_month, "significant": s.significant if s else None,
        "method": s.method if s else None,
    }


def _print(results, fleet) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not results:
        console.print("No accepted recommendations in this store yet.")
        return
    table = Table(title="Measured savings of accepted recommendations (90 % intervals)")
    for column in ("home", "advice", "accepted", "state", "saved", "a month", "promised"):
        table.add_column(column)
    for m in results:
        s = m.savings
        if s is None:
            saved, monthly = escape(m.note), ""
        elif s.method == "price paid per kWh":
            saved = f"{s.money:.2f} ± {s.money_uncertainty:.2f} {m.currency}"
            monthly = f"{m.money_per_month:.2f}"
        else:
            saved = f"{s.saved_kwh:.1f} ± {s.uncertainty_kwh:.1f} kWh over {s.days} days"
            monthly = "" if m.money_per_month is None else f"{m.money_per_month:.2f} {m.currency}"
        table.add_row(escape(m.home_id), escape(m.title), m.accepted_at.date().isoformat(), m.state, saved,
                      monthly, f"{m.promised_money_per_month:.2f} {m.currency}")
    console.print(table)
    if fleet.measured:
        console.print(f"{fleet.measured} measured: {fleet.total_money:.2f} saved in all, median "
                      f"{fleet.median_money_per_month:.2f} a month (10-90 %: {fleet.p10_money_per_month:.2f} to "
                      f"{fleet.p90_money_per_month:.2f}); {fleet.promises_kept} met their promise, "
                      f"{fleet.significant} are distinguishable from no change")


def register(sub) -> None:
    p = sub.add_parser("savings", help="measured savings of accepted recommendations (baseline vs actual)")
    p.add("--store-url", type=store_url, required=True, help="the store to read")
    p.add("--home", default=None, help="only this home's recommendations")
    p.add("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(handler=cmd_savings)
