"""The Bill and Energy flow pages' data: the month's minutes, forecasts and device usage from the
store, the tariffs a bill is worked out under, the household's budget, the Sankey figure, and money
in the user's locale (Babel). Every function checks the principal first, as ``ui.data`` does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import polars as pl
from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_decimal

from pipeline.energy.bill import MonthBill, budget_alert, month_bill, month_of, month_span
from pipeline.energy.flow import BATTERY, EV, GRID, HOME, SOLAR, EnergyFlow
from pipeline.energy.tariff import Tariff, TariffKind
from pipeline.records import BudgetAlert, DeviceKind
from sinks.rows import from_us
from ui.accounts import Accounts
from ui.auth import Principal, Role, require_home, require_owner
from ui.cost import Pricing
from ui.data import _device_usage, with_unmetered
from ui.db import TS, Database

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_BUDGET = Decimal("1000000")


# ---------------------------------------------------------------------------- money

def locale_of(browser: str | None, fallback: str) -> str:
    """A Babel locale name from the browser's (``en-GB``), else ``fallback``, else en_GB."""
    for name in (browser, fallback):
        if not name:
            continue
        try:
            return str(Locale.parse(name.replace("-", "_")))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return "en_GB"


def fmt_money(value: Decimal | float | None, currency: str, locale: str) -> str:
    if value is None:
        return "—"
    return format_currency(value, currency, locale=locale)


def fmt_quantity(value: Decimal, unit: str, locale: str) -> str:
    """A bill line's quantity: kWh to the watt-hour, or whole days, in the locale's digits."""
    if unit == "day":
        return f"{format_decimal(value, format='#,##0', locale=locale)} day" + ("s" if value != 1 else "")
    return f"{format_decimal(value, format='#,##0.000', locale=locale)} kWh"


def fmt_rate(value: Decimal | float, currency: str, locale: str) -> str:
    """A unit rate with the decimals it was set with (£0.233333), not rounded to the penny."""
    return format_currency(value, currency, locale=locale, decimal_quantization=False)


# ---------------------------------------------------------------------------- tariffs for a bill

@dataclass(frozen=True, slots=True)
class BillTariffs:
    history: tuple[Tariff, ...]
    timezone: str  # the supplier's days: the home's newest tariff's zone
    note: str  # where the terms come from, for the page


def bill_tariffs(pricing: Pricing, home_id: str, tz: str) -> BillTariffs:
    """The home's tariff history; before its first tariff (or with no tariff in the store) the
    viewer's flat price, with no standing charge or tax, as the History page prices it."""
    fallback = Tariff(EPOCH, TariffKind.FLAT, pricing.currency, tz, "Flat price",
                      import_price=pricing.flat_price_per_kwh)
    if pricing.book is None:
        return BillTariffs((fallback,), tz, f"No tariff in the store: a flat {pricing.flat_price_per_kwh:g} "
                           f"{pricing.currency}/kWh, without standing charge or tax.")
    history = pricing.book.history(home_id)
    zone = pricing.book.timezone(home_id)
    if history and history[0].effective_from > EPOCH:
        history = (Tariff(EPOCH, TariffKind.FLAT, pricing.currency, zone, "Flat price",
                          import_price=pricing.flat_price_per_kwh), *history)
    newest = history[-1]
    terms = []
    if newest.standing_charge:
        terms.append(f"standing charge {newest.standing_charge:g} {newest.currency}/day")
    if newest.tax_rate:
        terms.append(f"tax {newest.tax_rate:.1%}")
    if newest.levy_per_kwh:
        terms.append(f"levy {newest.levy_per_kwh:g} {newest.currency}/kWh")
    return BillTariffs(history, zone, f"Tariff: {newest.name or 'unnamed'} ({newest.describe()}"
                       + (f"; {', '.join(terms)}" if terms else "; no standing charge or tax in the tariff")
                       + "). Rates are before tax.")


# ---------------------------------------------------------------------------- store reads

def newest_minute(db: Database, principal: Principal, home_id: str) -> datetime | None:
    """The end of the home's newest minute of data (the bill's 'so far' ends there, not at the
    wall clock, so an imported history has a bill too)."""
    require_home(principal, home_id)
    (us,) = db.rows(f"SELECT {db.us('max(bucket)')} FROM home_1m WHERE home_id = :h", {"h": home_id})[0]
    return None if us is None else from_us(us) + timedelta(minutes=1)


def home_minutes(db: Database, principal: Principal, home_id: str, start: datetime,
                 end: datetime) -> pl.DataFrame:
    """``bucket, energy_wh`` of the home's total per minute (mean power / 60: the Wh of the minute)."""
    require_home(principal, home_id)
    return db.frame(f"SELECT {db.us('bucket')} AS bucket, mean_power_w / 60.0 AS energy_wh FROM home_1m "
                    "WHERE home_id = :h AND bucket >= :s AND bucket < :e ORDER BY bucket",
                    {"h": home_id, "s": start, "e": end}, {"bucket": TS, "energy_wh": pl.Float64})


def newest_forecasts(db: Database, principal: Principal, home_id: str, since: datetime) -> pl.DataFrame:
    """Each future slot's newest forecast: ``target_ts, resolution_min, yhat_w``."""
    require_home(principal, home_id)
    return db.frame(
        f"SELECT {db.us('f.target_ts')} AS target_ts, f.resolution_min, f.yhat_w FROM forecasts f "
        "JOIN (SELECT resolution_min, target_ts, max(made_at) AS made FROM forecasts "
        "      WHERE home_id = :h AND target_ts >= :s GROUP BY resolution_min, target_ts) n "
        "ON f.resolution_min = n.resolution_min AND f.target_ts = n.target_ts AND f.made_at = n.made "
        "WHERE f.home_id = :h ORDER BY f.target_ts",
        {"h": home_id, "s": since - timedelta(hours=1)},
        {"target_ts": TS, "resolution_min": pl.Int64, "yhat_w": pl.Float64})


def device_usage(db: Database, principal: Principal, home_id: str, start: datetime,
                 end: datetime) -> pl.DataFrame:
    """``device_id, bucket, energy_wh`` of what the home's metered devices and its unmetered rest
    used per minute (PV and batteries left out: they make or store energy, not use it)."""
    require_home(principal, home_id)
    usage = with_unmetered(_device_usage(db, home_id, start, end, 60))
    return (usage.filter(~pl.col("kind").is_in([DeviceKind.PV.value, DeviceKind.BATTERY.value]))
            .select("device_id", "bucket", pl.col("wh").alias("energy_wh")))


def flow_usage(db: Database, principal: Principal, home_id: str, start: datetime, end: datetime,
               step_s: int) -> pl.DataFrame:
    """``bucket, kind, energy_wh`` per device and minute (``step_s`` 60) or hour (3600)."""
    require_home(principal, home_id)
    return _device_usage(db, home_id, start, end, step_s).select(
        "bucket", "kind", pl.col("wh").alias("energy_wh"))


# ---------------------------------------------------------------------------- the budget

@dataclass(frozen=True, slots=True)
class Budget:
    amount: Decimal
    currency: str
    set_by: str
    set_at: datetime


def budget(db: Database, principal: Principal, home_id: str) -> Budget | None:
    require_home(principal, home_id)
    rows = db.rows(f"SELECT amount, currency, set_by, {db.us('set_at')} FROM budgets WHERE home_id = :h",
                   {"h": home_id})
    if not rows:
        return None
    amount, currency, by, at = rows[0]
    return Budget(Decimal(str(amount)), currency, by, from_us(at))


class BudgetRefused(ValueError):
    """The amount cannot be a budget; the message is for the page."""


def parse_amount(text: str | float | Decimal) -> Decimal:
    try:
        amount = Decimal(str(text).strip())
    except InvalidOperation:
        raise BudgetRefused(f"{str(text)[:40]!r} is not an amount.") from None
    if not amount.is_finite() or amount <= 0 or amount >= MAX_BUDGET:
        raise BudgetRefused("A budget is an amount above 0 and below 1,000,000.")
    return amount.quantize(Decimal("0.01"))


def set_budget(db: Database, accounts: Accounts, principal: Principal, home_id: str,
               amount: Decimal | None, currency: str, now: datetime) -> None:
    """The household's monthly budget (``None`` removes it); audited."""
    require_owner(principal, home_id)
    if amount is None:
        db.execute("DELETE FROM budgets WHERE home_id = :h", {"h": home_id})
        accounts.audit(principal.username, "budget_removed", home_id)
        return
    amount = parse_amount(amount)
    db.execute("INSERT INTO budgets (home_id, amount, currency, set_by, set_at) VALUES (:h, :a, :c, :u, :t) "
               "ON CONFLICT (home_id) DO UPDATE SET amount = excluded.amount, currency = excluded.currency, "
               "set_by = excluded.set_by, set_at = excluded.set_at",
               {"h": home_id, "a": str(amount) if db.dialect == "sqlite" else amount, "c": currency,
                "u": principal.username, "t": now})
    accounts.audit(principal.username, "budget_set", home_id, detail=f"{amount} {currency} a month")


def month_bill_of(db: Database, principal: Principal, pricing: Pricing, home_id: str, tz: str,
                  now: datetime) -> MonthBill | None:
    """The home's month of its newest reading, so far and projected, as the Bill page shows it;
    None when the home has no reading."""
    newest = newest_minute(db, principal, home_id)
    if newest is None:
        return None
    terms = bill_tariffs(pricing, home_id, tz)
    as_of = min(newest, now)
    year, month = month_of(as_of, terms.timezone)
    start, _ = month_span(year, month, terms.timezone)
    actual = home_minutes(db, principal, home_id, min(start, as_of - timedelta(days=14)), as_of)
    return month_bill(terms.history, actual, newest_forecasts(db, principal, home_id, as_of), as_of,
                      terms.timezone, home_id)


def budget_alerts(db: Database, pricing: Pricing, tz: str, now: datetime,
                  locale: str = "en_GB") -> list[BudgetAlert]:
    """Every home over (or projected over) its budget this month: what a notifier sends. The
    store's own job, not a user's: it reads every home with a budget."""
    system = Principal("shems", Role.ADMIN, frozenset())
    out = []
    for home_id, in db.rows("SELECT home_id FROM budgets ORDER BY home_id"):
        saved = budget(db, system, home_id)
        try:
            mb = month_bill_of(db, system, pricing, home_id, tz, now)
        except ValueError:  # no tariff covers the month: nothing to compare
            continue
        if saved is None or mb is None or saved.currency != mb.to_date.currency:
            continue
        alert = budget_alert(mb, saved.amount, now, locale)
        if alert is not None:
            out.append(alert)
    return out


# ---------------------------------------------------------------------------- periods

PERIODS = ("Day", "Week", "Month", "Year")


def period_range(period: str, day: date, tz: str) -> tuple[datetime, datetime]:
    """The local day, Monday-to-Sunday week, calendar month or year holding ``day``, in UTC."""
    if period == "Day":
        first, nxt = day, day + timedelta(days=1)
    elif period == "Week":
        first = day - timedelta(days=day.weekday())
        nxt = first + timedelta(days=7)
    elif period == "Month":
        first = day.replace(day=1)
        nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    else:
        first, nxt = date(day.year, 1, 1), date(day.year + 1, 1, 1)
    zone = ZoneInfo(tz)
    return (datetime.combine(first, time(0), zone).astimezone(timezone.utc),
            datetime.combine(nxt, time(0), zone).astimezone(timezone.utc))


# ---------------------------------------------------------------------------- the Sankey

_NODE = {  # key -> (label, colour)
    ("src", SOLAR): ("Solar", "#f2b705"), ("src", BATTERY): ("Battery discharge", "#2ca02c"),
    ("src", GRID): ("Grid import", "#7f7f7f"), ("snk", HOME): ("Home", "#1f77b4"),
    ("snk", EV): ("EV", "#9467bd"), ("snk", BATTERY): ("Battery charge", "#98df8a"),
    ("snk", GRID): ("Grid export", "#c7c7c7"),
}


def sankey(flow: EnergyFlow) -> go.Figure:
    """One Sankey of the flow's non-zero links, in kWh; each node's label carries its total."""
    links = [x for x in flow.links if x.mwh > 0]
    keys = [k for k in _NODE if (k[0] == "src" and any(x.source == k[1] for x in links))
            or (k[0] == "snk" and any(x.sink == k[1] for x in links))]
    index = {k: i for i, k in enumerate(keys)}
    totals = {k: (flow.sources if k[0] == "src" else flow.sinks)[k[1]] / 1e6 for k in keys}
    fig = go.Figure(go.Sankey(
        arrangement="snap", valueformat=",.2f", valuesuffix=" kWh",
        node={"label": [f"{_NODE[k][0]} {totals[k]:,.1f} kWh" for k in keys],
              "color": [_NODE[k][1] for k in keys], "pad": 18, "thickness": 16},
        link={"source": [index[("src", x.source)] for x in links],
              "target": [index[("snk", x.sink)] for x in links],
              "value": [x.kwh for x in links],
              "color": ["rgba(120,120,120,0.25)"] * len(links)}))
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def flow_table(flow: EnergyFlow) -> pl.DataFrame:
    """The links as rows a person reads (the Sankey's numbers, for screen readers and checking)."""
    names = {SOLAR: "Solar", BATTERY: "Battery", GRID: "Grid", HOME: "Home", EV: "EV"}
    return pl.DataFrame({"From": [names[x.source] for x in flow.links if x.mwh],
                         "To": [names[x.sink] + (" (charge)" if x.sink == BATTERY else "")
                                + (" (export)" if x.sink == GRID else "") for x in flow.links if x.mwh],
                         "kWh": [round(x.kwh, 3) for x in flow.links if x.mwh]},
                        schema={"From": pl.Utf8, "To": pl.Utf8, "kWh": pl.Float64})

