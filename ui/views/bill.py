"""The bill: this month so far and projected, line by line as a supplier prints it, what each
metered device cost, and the household's monthly budget."""

from datetime import date, timedelta
from decimal import Decimal

import polars as pl
import streamlit as st

from pipeline.energy.bill import Basis, Bill, budget_alert, device_costs, month_bill, month_span
from ui import energy, fmt
from ui.auth import AccessDenied
from ui.common import home_page, now, refusals, user_locale
from ui.safe import md_escape

v, p, home, tz = home_page("Bill")
locale = user_locale(v)

with refusals():
    newest = energy.newest_minute(v.db, p, home)
if newest is None:
    st.info("No readings from this home yet: the bill starts with its first reading.")
    st.stop()
terms = energy.bill_tariffs(v.pricing(), home, tz)
tz = terms.timezone
as_of = min(newest, now())
months = []
first = as_of.astimezone(energy.ZoneInfo(tz)).date().replace(day=1)
for _ in range(12):
    months.append(first)
    first = (first - timedelta(days=1)).replace(day=1)
picked = st.selectbox("Month", months, format_func=lambda d: f"{d:%B %Y}", key="bill_month",
                      help="The months up to the one of this home's newest reading.")
assert isinstance(picked, date)
start, end = month_span(picked.year, picked.month, tz)
cut = min(as_of, end)
with refusals():
    actual = energy.home_minutes(v.db, p, home, min(start, cut - timedelta(days=14)), cut)
    forecasts = energy.newest_forecasts(v.db, p, home, cut)
    saved = energy.budget(v.db, p, home)
try:
    mb = month_bill(terms.history, actual, forecasts, cut, tz, home)
except ValueError as exc:
    st.error(md_escape(f"This month cannot be billed: {exc}"))
    st.stop()
cur = mb.to_date.currency


def money(value: Decimal | float | None) -> str:
    return energy.fmt_money(value, cur, locale)


stale = now() - newest > timedelta(hours=2)
so_far = f"to {mb.to_date.last_day:%-d %B}" + (" (the newest reading)" if stale else "")
m1, m2, m3 = st.columns(3)
m1.metric(f"So far, {so_far}" if mb.basis is not Basis.COMPLETE else "The month", money(mb.to_date.due),
          help="Tax included, export credit deducted.")
m2.metric("Projected month", money(mb.projected.due), help=mb.basis_text)
m3.metric("Monthly budget", money(saved.amount) if saved else "not set")

alert = budget_alert(mb, saved.amount if saved and saved.currency == cur else None, now(), locale)
if saved and saved.currency != cur:
    st.warning(md_escape(f"The budget is in {saved.currency} but the tariff bills in {cur}: set it again."))
elif alert is not None:
    (st.error if alert.kind.value == "exceeded" else st.warning)(md_escape(alert.message))
elif saved:
    st.success(md_escape(f"Projected {money(mb.projected.due)}: within the budget of {money(saved.amount)}."))
if mb.basis is not Basis.COMPLETE:
    st.caption(md_escape(mb.basis_text))
st.caption(md_escape(terms.note))


def rate(value: Decimal) -> str:
    return energy.fmt_rate(value, cur, locale)


def _quantity(value: Decimal, unit: str) -> str:
    return energy.fmt_quantity(value, unit, locale)


def bill_table(b: Bill) -> pl.DataFrame:
    rows = [(line.label, _quantity(line.quantity, line.unit), f"{rate(line.rate)} / {line.unit}",
             money(line.amount)) for line in b.lines]
    rows.append(("Charges", "", "", money(b.subtotal)))
    rows += [(f"Tax at {float(t.rate) * 100:g} %", "", f"on {money(t.base)}", money(t.amount)) for t in b.taxes]
    rows.append(("Total", "", "", money(b.total)))
    for line in b.exports:
        rows.append((line.label, _quantity(line.quantity, "kWh"), f"{rate(line.rate)} / kWh", money(line.amount)))
    if b.exports:
        rows.append(("Due", "", "", money(b.due)))
    return pl.DataFrame(rows, schema={"Item": pl.Utf8, "Quantity": pl.Utf8, "Rate": pl.Utf8, "Amount": pl.Utf8},
                        orient="row")


# One table under the other, each the page's width: side by side at 1280 px, long tariff names
# ("Economy 7 with an evening peak · night") pushed the Amount column out of view.
st.subheader("So far" if mb.basis is not Basis.COMPLETE else f"{picked:%B %Y}")
st.caption(f"{mb.to_date.first_day:%-d %b} – {mb.to_date.last_day:%-d %b %Y}, {mb.to_date.days} "
           f"day{'s' if mb.to_date.days != 1 else ''}")
st.dataframe(bill_table(mb.to_date), hide_index=True, key="bill_to_date")
if mb.basis is not Basis.COMPLETE:
    st.subheader("Projected month")
    to_import = mb.projected.import_kwh - mb.to_date.import_kwh
    to_export = mb.projected.export_kwh - mb.to_date.export_kwh
    st.caption(f"{mb.projected.first_day:%-d %b} – {mb.projected.last_day:%-d %b %Y}, "
               f"{mb.projected.days} days; {to_import:,.1f} kWh still to import"
               + (f", {to_export:,.1f} kWh to export" if to_export else ""))
    st.dataframe(bill_table(mb.projected), hide_index=True, key="bill_projected")

st.subheader("By device, so far")
with refusals():
    usage = energy.device_usage(v.db, p, home, start, cut)
per_device = device_costs(terms.history, usage, home)
if per_device.is_empty():
    st.caption("No metered device in this home: the bill is the meter's.")
else:
    total_kwh = float(per_device["kwh"].sum())
    st.dataframe(per_device.select(
        pl.col("device_id").map_elements(fmt.label, return_dtype=pl.Utf8).alias("Device"), pl.col("kwh").round(2).alias("kWh"),
        pl.col("cost").map_elements(money, return_dtype=pl.Utf8).alias("Energy cost with tax"),
        (pl.col("kwh") / total_kwh * 100).round(1).alias("% of energy")), hide_index=True, key="bill_devices")
    st.caption("Energy at the unit rates with levy and tax; the standing charge is not shared out. "
               "'unmetered' is the meter's total minus its sub-metered devices.")

st.subheader("Monthly budget")
if not p.owns(home):
    st.caption("The household sets its budget; operators see it." if saved is None
               else md_escape(f"Set by {saved.set_by}."))
else:
    with st.form("budget"):
        wanted = st.number_input(f"Budget a month ({cur}, tax included)", min_value=0.0, step=5.0,
                                 value=float(saved.amount) if saved else float(round(mb.projected.due)),
                                 key="budget_amount")
        c1, c2 = st.columns(2)
        save = c1.form_submit_button("Save budget", type="primary")
        remove = c2.form_submit_button("Remove budget", disabled=saved is None)
    if save or remove:
        try:
            energy.set_budget(v.db, v.accounts, p, home, None if remove else energy.parse_amount(wanted), cur, now())
        except (energy.BudgetRefused, AccessDenied) as exc:
            st.error(md_escape(exc))
        else:
            st.rerun()
