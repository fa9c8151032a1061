"""A home's electricity bill for a month: the lines a supplier prints, month to date, the projected
month, what each metered device cost, and the budget alert.

Pure: frames and tariffs in, :class:`Bill` / :class:`MonthBill` / :class:`BudgetAlert` out.

How a bill is worked out (the way UK and most European suppliers print it):

* **Energy charges**, one line per tariff and rate band (``Economy 7 · night``): the band's
  imported kWh, rounded to the watt-hour (a smart meter's register resolution), times the band's
  unit rate, rounded to the minor unit (the penny). A dynamic tariff is one line: the sum of each
  bucket's kWh times its price, rounded once; its rate is the average.
* **Levy** (``levy_per_kwh``), a line per tariff: all its imported kWh times the levy, rounded.
* **Standing charge**, a line per tariff: the local days of the bill on which that tariff was in
  effect at the day's start, times the daily charge, rounded.
* **Subtotal**: the sum of those rounded lines.
* **Tax** (VAT), one line per rate: the rate times the subtotal of the lines billed under it,
  rounded half up to the minor unit (HMRC lets a supplier round the VAT of an invoice to the
  nearest penny).
* **Total** = subtotal + tax. **Export** (a credit) is shown after the total, untaxed (UK Smart
  Export Guarantee payments carry no VAT for households), and **due** = total - export credit.

Money is :class:`decimal.Decimal` throughout; a tariff's float price enters as the decimal it was
written as (``Decimal(repr(0.245)) == Decimal("0.245")``), so no binary fraction leaks into a
penny. Energy arrives as a frame of ``bucket`` (UTC start) and ``energy_wh`` (signed: positive
imported from the grid, negative exported); a bucket is priced at its start, as
``pipeline.energy.tariff`` does everywhere.

The projection (:func:`month_bill`) adds to the month to date the energy of the rest of the month:
the home's forecasts where they reach, then the recent average day (its mean power per local hour
over the last days with data), and says which it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from babel.numbers import format_currency

from pipeline.energy.tariff.model import Tariff, TariffKind, _epoch_us, _utc_series, band_index, history_prices
from pipeline.records import BudgetAlert, BudgetAlertKind

KWH = Decimal("0.001")  # a kWh quantity on a bill: to the watt-hour
_ZERO_DECIMAL = {"JPY", "KRW", "ISK", "CLP", "VND", "HUF"}  # currencies billed in whole units here
AVERAGE_DAYS = 14  # the recent average day is taken over this many days before the bill's end


class Basis(str, Enum):
    """What the rest of the month was projected from."""

    COMPLETE = "complete"  # the month is over: nothing to project
    FORECAST = "forecast"  # the home's forecasts cover the rest of the month
    FORECAST_AND_AVERAGE = "forecast_and_average"  # forecasts as far as they reach, then the average day
    AVERAGE = "average"  # no forecast: the recent average day
    NONE = "none"  # neither: the projection is the month to date


def minor_unit(currency: str) -> Decimal:
    return Decimal(1) if currency.upper() in _ZERO_DECIMAL else Decimal("0.01")


def money(value: Decimal | float, currency: str) -> Decimal:
    """Rounded half up to the currency's minor unit, as suppliers round each line."""
    return _dec(value).quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def _dec(value: Decimal | float | int) -> Decimal:
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True, slots=True)
class BillLine:
    kind: str  # energy | levy | standing | export
    label: str  # "Economy 7 · night", "Standing charge", ...
    quantity: Decimal  # kWh to the watt-hour, or days
    unit: str  # "kWh" or "day"
    rate: Decimal  # currency per unit before tax (dynamic: the average, for reading only)
    amount: Decimal  # rounded to the minor unit; an export credit is negative
    tax_rate: Decimal  # the tax this line is billed under (0 for export)


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate: Decimal  # fraction, 0.05 = 5 %
    base: Decimal  # the subtotal of the lines under this rate
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Bill:
    home_id: str
    currency: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    first_day: date  # local
    last_day: date  # local, inclusive
    lines: tuple[BillLine, ...]  # energy, levy and standing charge lines
    taxes: tuple[TaxLine, ...]
    exports: tuple[BillLine, ...]  # export credits (negative amounts)
    import_kwh: Decimal
    export_kwh: Decimal

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def tax(self) -> Decimal:
        return sum((t.amount for t in self.taxes), Decimal(0))

    @property
    def total(self) -> Decimal:
        """What the charges come to, tax included, before any export credit."""
        return self.subtotal + self.tax

    @property
    def export_credit(self) -> Decimal:
        return -sum((line.amount for line in self.exports), Decimal(0))

    @property
    def due(self) -> Decimal:
        return self.total - self.export_credit


@dataclass(frozen=True, slots=True)
class MonthBill:
    """A calendar month of a home (local time): so far, and projected to the month's end."""

    month: str  # "2024-11"
    as_of: datetime  # UTC: where the month to date ends (the newest data, or now)
    to_date: Bill
    projected: Bill
    basis: Basis
    basis_text: str  # one sentence for people: what the projection used
    projected_rest_kwh: float  # the energy projected for the rest of the month (net, kWh)


# ------------------------------------------------------------------------------ months and days

def month_span(year: int, month: int, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants of a local calendar month's first and next month's first midnight."""
    zone = ZoneInfo(tz)
    start = datetime.combine(date(year, month, 1), time(0), zone)
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return start.astimezone(timezone.utc), datetime.combine(nxt, time(0), zone).astimezone(timezone.utc)


def month_of(ts: datetime, tz: str) -> tuple[int, int]:
    local = ts.astimezone(ZoneInfo(tz))
    return local.year, local.month


def _local_days(start: datetime, end: datetime, tz: str) -> tuple[date, date]:
    zone = ZoneInfo(tz)
    return start.astimezone(zone).date(), (end - timedelta(microseconds=1)).astimezone(zone).date()


# ------------------------------------------------------------------------------ the bill

def bill(history: Sequence[Tariff], energy: pl.DataFrame, start: datetime, end: datetime, tz: str,
         home_id: str = "") -> Bill:
    """The bill of ``[start, end)`` under a tariff history from ``energy`` (``bucket``,
    ``energy_wh``); buckets outside the range are ignored. Standing charges cover every local day
    the range touches (a month to date ending at 14:00 on the 12th has 12 days). Raises
    ValueError (the tariff module's message) for energy or a day no tariff covers."""
    if end <= start:
        raise ValueError("a bill's end must be after its start")
    if not history:
        raise ValueError(f"no tariff for home {home_id!r}: a bill needs one")
    currency = history[0].currency
    frame = _in_range(energy, start, end)
    ts = _utc_series(frame["bucket"])
    wh = frame["energy_wh"].cast(pl.Float64).to_numpy()
    imp_price, exp_price = history_prices(history, ts, home_id)
    which = _tariff_index(history, ts)
    lines: list[BillLine] = []
    exports: list[BillLine] = []
    total_import = total_export = Decimal(0)
    for i, tariff in enumerate(history):
        mine = which == i
        if not mine.any():
            continue
        name = tariff.name or "Energy"
        rate_tax = _dec(tariff.tax_rate)
        imported = mine & (wh > 0)
        bands = band_index(tariff, ts.filter(pl.Series(imported)))
        band_wh = wh[imported]
        band_price = imp_price[imported]
        tariff_import = Decimal(0)
        for band in sorted(set(bands.tolist()), key=lambda b: (b < 0, b)):
            sel = bands == band
            kwh = _kwh(band_wh[sel].sum())
            tariff_import += kwh
            if tariff.kind == TariffKind.DYNAMIC:
                amount = money(float((band_wh[sel] / 1000 * band_price[sel]).sum()), currency)
                rate = (amount / kwh).quantize(Decimal("0.0001")) if kwh else Decimal(0)
            else:
                rate = _dec(tariff.periods[band].import_price if band >= 0 else tariff.import_price or 0.0)
                amount = money(kwh * rate, currency)
            lines.append(BillLine("energy", f"{name} · {_band_name(tariff, band)}", kwh, "kWh", rate,
                                  amount, rate_tax))
        if tariff.levy_per_kwh:
            levy = _dec(tariff.levy_per_kwh)
            lines.append(BillLine("levy", f"{name} · levy", tariff_import, "kWh", levy,
                                  money(tariff_import * levy, currency), rate_tax))
        exported = mine & (wh < 0)
        if exported.any():
            kwh = _kwh(-wh[exported].sum())
            prices = exp_price[exported]
            if np.all(prices == prices[0]):
                rate = _dec(float(prices[0]))
                amount = money(kwh * rate, currency)
            else:
                amount = money(float((-wh[exported] / 1000 * prices).sum()), currency)
                rate = (amount / kwh).quantize(Decimal("0.0001")) if kwh else Decimal(0)
            exports.append(BillLine("export", f"{name} · export", kwh, "kWh", rate, -amount, Decimal(0)))
            total_export += kwh
        total_import += tariff_import
    first_day, last_day = _local_days(start, end, tz)
    lines += _standing_lines(history, first_day, last_day, tz, home_id)
    return Bill(home_id, currency, start, end, first_day, last_day, tuple(lines),
                _taxes(lines, currency), tuple(exports), total_import, total_export)


def _in_range(energy: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    missing = {"bucket", "energy_wh"} - set(energy.columns)
    if missing:
        raise ValueError(f"a bill needs the columns bucket, energy_wh; missing {sorted(missing)}")
    frame = energy.select(pl.col("bucket").cast(pl.Datetime("us", "UTC")), pl.col("energy_wh").cast(pl.Float64))
    return frame.filter((pl.col("bucket") >= start) & (pl.col("bucket") < end)
                        & pl.col("energy_wh").is_finite())


def _kwh(wh: float) -> Decimal:
    return (_dec(float(wh)) / 1000).quantize(KWH, rounding=ROUND_HALF_UP)


def _band_name(tariff: Tariff, band: int) -> str:
    if band >= 0:
        return tariff.periods[band].name
    if tariff.kind == TariffKind.DYNAMIC:
        return "dynamic prices"
    if tariff.kind == TariffKind.TOU:
        return tariff.base_band or "standard rate"
    return tariff.base_band or "unit rate"


def _tariff_index(history: Sequence[Tariff], ts: pl.Series) -> np.ndarray:
    us = ts.dt.epoch("us").to_numpy()
    starts = np.array([_epoch_us(t.effective_from) for t in history], dtype=np.int64)
    return np.searchsorted(starts, us, side="right") - 1


def _standing_lines(history: Sequence[Tariff], first: date, last: date, tz: str,
                    home_id: str) -> list[BillLine]:
    zone = ZoneInfo(tz)
    days: dict[int, int] = {}
    day = first
    while day <= last:
        midnight = datetime.combine(day, time(0), zone).astimezone(timezone.utc)
        idx = max((i for i, t in enumerate(history) if t.effective_from <= midnight), default=None)
        if idx is None:
            raise ValueError(f"no tariff in effect for home {home_id!r} on {day.isoformat()}: its first "
                             f"tariff starts {history[0].effective_from.isoformat()}")
        days[idx] = days.get(idx, 0) + 1
        day += timedelta(days=1)
    out = []
    for idx, count in sorted(days.items()):
        tariff = history[idx]
        if not tariff.standing_charge:
            continue
        rate = _dec(tariff.standing_charge)
        label = "Standing charge" if len(days) == 1 else f"{tariff.name or 'Tariff'} · standing charge"
        out.append(BillLine("standing", label, Decimal(count), "day", rate,
                            money(count * rate, tariff.currency), _dec(tariff.tax_rate)))
    return out


def _taxes(lines: Sequence[BillLine], currency: str) -> tuple[TaxLine, ...]:
    by_rate: dict[Decimal, Decimal] = {}
    for line in lines:
        by_rate[line.tax_rate] = by_rate.get(line.tax_rate, Decimal(0)) + line.amount
    return tuple(TaxLine(rate, base, money(base * rate, currency))
                 for rate, base in sorted(by_rate.items()) if rate)


# ------------------------------------------------------------------------------ per device

def device_costs(history: Sequence[Tariff], usage: pl.DataFrame, home_id: str = "") -> pl.DataFrame:
    """What each metered device's consumption cost: ``usage`` (``device_id``, ``bucket``,
    ``energy_wh``) to ``device_id, kwh, cost`` (unit rate plus levy, tax included, not rounded:
    an apportionment of the bill's energy lines, not a bill line). Generation (negative energy) is
    not a cost and is left out."""
    if usage.is_empty():
        return pl.DataFrame(schema={"device_id": pl.Utf8, "kwh": pl.Float64, "cost": pl.Float64})
    used = usage.filter(pl.col("energy_wh") > 0)
    ts = _utc_series(used["bucket"])
    imp, _ = history_prices(history, ts, home_id)
    which = _tariff_index(history, ts)
    levy = np.array([t.levy_per_kwh for t in history])[which]
    tax = np.array([t.tax_rate for t in history])[which]
    kwh = used["energy_wh"].cast(pl.Float64).to_numpy() / 1000
    return (used.select("device_id").with_columns(pl.Series("kwh", kwh),
                                                  pl.Series("cost", kwh * (imp + levy) * (1 + tax)))
            .group_by("device_id").agg(pl.col("kwh").sum(), pl.col("cost").sum())
            .sort("cost", descending=True))


# ------------------------------------------------------------------------------ the month

def month_bill(history: Sequence[Tariff], actual: pl.DataFrame, forecasts: pl.DataFrame,
               as_of: datetime, tz: str, home_id: str = "",
               average_days: int = AVERAGE_DAYS) -> MonthBill:
    """The month of ``as_of`` (local): the bill to date from ``actual`` (1-minute ``bucket``,
    ``energy_wh``; it should reach ``average_days`` before ``as_of`` for the average day) and the
    projected bill to the month's end.

    ``forecasts``: ``target_ts``, ``resolution_min``, ``yhat_w`` (one row per slot: the newest
    forecast of it). The rest of the month is projected on 15-minute slots: a slot a forecast
    covers takes the forecast's mean power; any other slot the home's recent mean power in that
    local hour of the day; without either, nothing is projected and the basis says so.
    """
    year, month = month_of(as_of, tz)
    start, end = month_span(year, month, tz)
    label = f"{year:04d}-{month:02d}"
    to_date = bill(history, actual, start, as_of, tz, home_id)
    if as_of >= end:
        return MonthBill(label, as_of, to_date, to_date, Basis.COMPLETE, "The month is complete.", 0.0)
    rest, basis, text = project_rest(actual, forecasts, as_of, end, tz, average_days)
    projected = bill(history, pl.concat([_in_range(actual, start, as_of), rest], how="vertical"),
                     start, end, tz, home_id)
    return MonthBill(label, as_of, to_date, projected, basis, text,
                     float(rest["energy_wh"].sum()) / 1000 if rest.height else 0.0)


_SLOT = timedelta(minutes=15)


def project_rest(actual: pl.DataFrame, forecasts: pl.DataFrame, as_of: datetime, end: datetime,
                 tz: str, average_days: int = AVERAGE_DAYS) -> tuple[pl.DataFrame, Basis, str]:
    """The energy of ``[as_of, end)`` as 15-minute ``bucket, energy_wh`` rows, what it came from,
    and a sentence saying so."""
    first = datetime.fromtimestamp(as_of.timestamp() // 900 * 900, timezone.utc)
    slots = pl.datetime_range(first, end, _SLOT, closed="left", time_zone="UTC", time_unit="us",
                              eager=True).alias("bucket")
    # the slot containing as_of counts only for its part after as_of
    weight = np.ones(len(slots))
    if len(slots):
        weight[0] = (min(first + _SLOT, end) - as_of) / _SLOT
    mean_w = np.full(len(slots), np.nan)
    from_forecast = _forecast_power(forecasts, slots)
    mean_w[~np.isnan(from_forecast)] = from_forecast[~np.isnan(from_forecast)]
    covered = int((~np.isnan(mean_w)).sum())
    profile = _hour_profile(actual, as_of, tz, average_days)
    if profile is not None:
        hours = slots.dt.convert_time_zone(tz).dt.hour().to_numpy()
        fill = np.isnan(mean_w)
        mean_w[fill] = profile[hours[fill]]
    known = ~np.isnan(mean_w)
    rest = pl.DataFrame({"bucket": slots.filter(pl.Series(known)),
                         "energy_wh": (mean_w * weight / 4)[known]})
    hours_fc = covered * 0.25
    if covered and covered == len(slots):
        return rest, Basis.FORECAST, "Projected from the home's forecasts for the rest of the month."
    avg = f"the home's average day over the last {average_days} days ({_day_text(profile)}, by hour of day)"
    if covered and profile is not None:
        return rest, Basis.FORECAST_AND_AVERAGE, (
            f"Projected from the home's forecasts for the next {hours_fc:,.0f} hours, then from {avg}.")
    if profile is not None:
        return rest, Basis.AVERAGE, f"No forecast reaches this month's remaining days: projected from {avg}."
    return rest, Basis.NONE if not covered else Basis.FORECAST, (
        # The bill of the whole month still has each day's standing charge: "the month so far"
        # read as if the projection were the amount so far, beside a projection ten times it.
        "Not enough data to project the rest of the month's use: the projection is the energy used "
        "so far, with the standing charge of every day of the month."
        if not covered else
        f"Projected from the home's forecasts for the next {hours_fc:,.0f} hours only; no recent data "
        "for the days after.")


def _forecast_power(forecasts: pl.DataFrame, slots: pl.Series) -> np.ndarray:
    """Each slot's forecast mean power (W), NaN where no forecast covers it."""
    out = np.full(len(slots), np.nan)
    if forecasts.is_empty() or not len(slots):
        return out
    slot_us = slots.dt.epoch("us").to_numpy()
    f = forecasts.sort("resolution_min", descending=True)  # a finer forecast overwrites a coarser one
    ts = _utc_series(f["target_ts"]).dt.epoch("us").to_numpy()
    res = f["resolution_min"].to_numpy().astype(np.int64) * 60_000_000
    yhat = f["yhat_w"].cast(pl.Float64).to_numpy()
    for r in np.unique(res)[::-1]:
        sel = res == r
        order = np.argsort(ts[sel])
        starts, values = ts[sel][order], yhat[sel][order]
        pos = np.searchsorted(starts, slot_us, side="right") - 1
        ok = (pos >= 0) & (slot_us < starts[np.clip(pos, 0, None)] + r)
        out[ok] = values[pos[ok]]
    return out


def _day_text(profile: np.ndarray | None) -> str:
    if profile is None:
        return ""
    imported, exported = profile.clip(min=0).sum() / 1000, -profile.clip(max=0).sum() / 1000
    text = f"{imported:,.1f} kWh imported a day"
    return text + (f" and {exported:,.1f} kWh exported" if exported >= 0.05 else "")


def _hour_profile(actual: pl.DataFrame, as_of: datetime, tz: str, days: int) -> np.ndarray | None:
    """The recent mean power (W) per local hour of day; None when some hour has no data in the
    window. An hour's mean nets its import and export (a PV home's noon is an export)."""
    if actual.is_empty():
        return None
    recent = _in_range(actual, as_of - timedelta(days=days), as_of)
    if recent.is_empty():
        return None
    # energy_wh of a 1-minute bucket is its mean power / 60
    by_hour = (recent.group_by(pl.col("bucket").dt.convert_time_zone(tz).dt.hour().alias("hour"))
               .agg((pl.col("energy_wh").mean() * 60).alias("mean_w")))
    if by_hour.height < 24:
        return None
    profile = np.zeros(24)
    profile[by_hour["hour"].to_numpy()] = by_hour["mean_w"].to_numpy()
    return profile


# ------------------------------------------------------------------------------ the budget

def budget_alert(mb: MonthBill, budget: Decimal | float | None, now: datetime,
                 locale: str = "en_GB") -> BudgetAlert | None:
    """An alert when the projected month (what is due, export credit deducted) exceeds the
    homeowner's monthly budget, or the month to date already has; None otherwise."""
    if budget is None:
        return None
    limit = _dec(budget)
    projected, so_far = mb.projected.due, mb.to_date.due
    if projected <= limit and so_far <= limit:
        return None
    cur = mb.to_date.currency

    def fmt(value: Decimal) -> str:
        return format_currency(value, cur, locale=locale)

    if so_far > limit:
        kind = BudgetAlertKind.EXCEEDED
        message = (f"This month's electricity has already cost {fmt(so_far)}, over the budget of "
                   f"{fmt(limit)}; the month is projected to reach {fmt(projected)}.")
    else:
        kind = BudgetAlertKind.PROJECTED
        message = (f"This month's electricity is projected to cost {fmt(projected)}, over the budget of "
                   f"{fmt(limit)} ({fmt(so_far)} so far).")
    return BudgetAlert(home_id=mb.to_date.home_id, month=mb.month, kind=kind, budget=float(limit),
                       projected=float(projected), to_date=float(so_far), currency=cur,
                       basis=mb.basis.value, created_at=now, message=message)
