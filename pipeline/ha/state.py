"""What a home's Home Assistant sensors read, computed from the flow's records (pure state).

``HomeDashboard`` is a per-home state object fed with the home's 1-minute totals (with their
cost), its forecasts, anomalies and recommendations, in event time: "today" is the local day of
the newest minute it saw, so a replay gives the same values as the live run. After each batch it
returns the sensors whose values changed (``HaUpdate``); the flow publishes them.

Money: cost is energy times the tariff book's import price (export at the export price) per
minute, as the viewer prices it. The bill follows ``pipeline.energy.bill``: imported energy at the
unit rate plus the levy, the standing charge for every local day of the month so far, tax on
both, export credited after tax; it differs from the Bill page only by that page's rounding of
each line to the penny. The projection carries the month's energy per hour so far over the whole
month and adds every day's standing charge. Energy counts what this flow has seen since the
month began (with ``--recovery-dir`` that survives restarts; without it a restart starts from
zero).
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

from pipeline.energy.tariff import TariffBook, price_frame
from pipeline.records import Anomaly, Forecast, HomeWindow, Recommendation

HA_STATE_MAX = 255  # HA refuses a longer state


@dataclass(frozen=True, slots=True)
class BillTerms:
    """A tariff's daily standing charge and tax rate, as the bill applies them."""

    standing_per_day: float = 0.0
    tax_rate: float = 0.0

    @property
    def standing_taxed(self) -> float:
        return self.standing_per_day * (1 + self.tax_rate)


@dataclass(frozen=True, slots=True)
class HaUpdate:
    """Sensors of one home whose state (and attributes) changed: (key, state JSON) pairs."""

    home_id: str
    states: tuple[tuple[str, dict], ...]
    attributes: tuple[tuple[str, dict], ...] = ()
    currency: str | None = None


class Pricer:
    """Prices home minutes with a tariff book from a day of per-minute prices per home, built once
    a day (a polars frame per minute would cost ~5 ms a home-minute: 10 s a minute for 2,000 homes)."""

    SPAN = timedelta(hours=24)

    def __init__(self, book: TariffBook | None) -> None:
        self.book = book
        self.days: dict[str, tuple[datetime, np.ndarray, np.ndarray]] = {}

    def cost(self, w: HomeWindow) -> float | None:
        """The minute's cost (None without a book or where it has no price)."""
        return self.minute(w)[0]

    def minute(self, w: HomeWindow) -> tuple[float | None, float | None, BillTerms | None]:
        """The minute's energy cost, what it adds to the bill (import at the unit rate plus the
        levy, taxed; export credited untaxed) and the tariff's daily terms; None where unpriced."""
        if self.book is None:
            return None, None, None
        day = self.days.get(w.home_id)
        if day is None or not day[0] <= w.bucket < day[0] + timedelta(minutes=len(day[1])):
            day = self._prices(w.home_id, w.bucket.replace(minute=0, second=0, microsecond=0))
            self.days[w.home_id] = day
        i = int((w.bucket - day[0]) // timedelta(minutes=1))
        kwh = float(w.energy_wh) / 1000.0
        price = float(day[1][i] if kwh >= 0 else day[2][i])
        cost = kwh * price
        if not math.isfinite(cost):
            return None, None, None
        try:
            tariff = self.book.tariff_at(w.home_id, w.bucket)
        except ValueError:
            return cost, cost, None
        terms = BillTerms(float(tariff.standing_charge), float(tariff.tax_rate))
        bill = kwh * (price + tariff.levy_per_kwh) * (1 + tariff.tax_rate) if kwh >= 0 else cost
        return cost, bill, terms


    def _prices(self, home_id: str, start: datetime) -> tuple[datetime, np.ndarray, np.ndarray]:
        assert self.book is not None
        # A day ahead, else (a price file ending within the day, a tariff starting) just the hour.
        for span in (self.SPAN, timedelta(hours=1)):
            try:
                frame = price_frame(self.book, home_id, start, start + span, timedelta(minutes=1))
            except ValueError:
                continue
            return start, frame["import_price"].to_numpy(), frame["export_price"].to_numpy()
        return start, np.full(60, np.nan), np.full(60, np.nan)  # no price this hour: unpriced


def price_windows(windows: list[HomeWindow], book: TariffBook | None) -> list[float | None]:
    pricer = Pricer(book)
    return [pricer.cost(w) for w in windows]


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _round(x: float, digits: int) -> float:
    return float(round(x, digits))


@dataclass
class HomeDashboard:
    home_id: str
    timezone: str
    day: date | None = None
    month: tuple[int, int] | None = None
    today: dict[datetime, tuple[float, float | None]] = field(default_factory=dict)  # bucket -> (Wh, cost)
    today_bill: dict[datetime, float] = field(default_factory=dict)  # bucket -> what it adds to the bill
    month_before_today_cost: float = 0.0
    month_before_today_bill: float = 0.0
    terms: BillTerms = field(default_factory=BillTerms)
    month_priced: bool = False  # a price was known for some minute of the month
    month_first_bucket: datetime | None = None
    newest: HomeWindow | None = None
    next_hour: Forecast | None = None
    open_anomalies: dict[tuple[str, str, datetime], Anomaly] = field(default_factory=dict)
    recommendations: dict[tuple[str, str], Recommendation] = field(default_factory=dict)
    published: dict[str, dict] = field(default_factory=dict)

    # ------------------------------------------------------------------ feeding
    def add_window(self, w: HomeWindow, cost: float | None, bill: float | None = None) -> None:
        zone = ZoneInfo(self.timezone)
        local = w.bucket.astimezone(zone)
        if self.day is None or local.date() > self.day:
            self._roll_day(local.date())
        elif local.date() < self.day:
            return  # a re-emitted minute of a past day: today's sensors are about today
        self.today[w.bucket] = (float(w.energy_wh), cost)
        billed = bill if bill is not None else cost
        if billed is not None:
            self.today_bill[w.bucket] = billed
        if cost is not None:
            self.month_priced = True
        if self.month_first_bucket is None:
            self.month_first_bucket = w.bucket
        if self.newest is None or w.bucket >= self.newest.bucket:
            self.newest = w

    def _roll_day(self, day: date) -> None:
        month = (day.year, day.month)
        if self.month == month and self.day is not None:
            self.month_before_today_cost += sum(c for _, c in self.today.values() if c is not None)
            self.month_before_today_bill += sum(self.today_bill.values())
        else:
            self.month, self.month_before_today_cost, self.month_before_today_bill = month, 0.0, 0.0
            self.month_priced, self.month_first_bucket = False, None
        self.day = day
        self.today = {}
        self.today_bill = {}

    def add_forecast(self, f: Forecast) -> None:
        if f.resolution_min != 60 or f.horizon_min != 60:
            return  # the next hour only: issued at each hour for the hour after
        if self.next_hour is None or f.made_at >= self.next_hour.made_at:
            self.next_hour = f

    def add_anomaly(self, a: Anomaly) -> None:
        key = (a.device_id, a.kind.value, a.started_at)
        if a.ended_at is None:
            self.open_anomalies[key] = a
        else:
            self.open_anomalies.pop(key, None)

    def add_recommendation(self, r: Recommendation) -> None:
        self.recommendations[(r.kind, r.device_id)] = r

    def add(self, record: HomeWindow | Forecast | Anomaly | Recommendation, cost: float | None = None,
            bill: float | None = None, terms: BillTerms | None = None) -> None:
        if isinstance(record, HomeWindow):
            if terms is not None:
                self.terms = terms
            self.add_window(record, cost, bill)
        elif isinstance(record, Forecast):
            self.add_forecast(record)
        elif isinstance(record, Anomaly):
            self.add_anomaly(record)
        elif isinstance(record, Recommendation):
            self.add_recommendation(record)

    # ------------------------------------------------------------------ reading
    def values(self, currency: str | None) -> tuple[dict[str, dict], dict[str, dict]]:
        """Every sensor's state JSON and attributes that is known now."""
        states: dict[str, dict] = {}
        attrs: dict[str, dict] = {}
        zone = ZoneInfo(self.timezone)
        if self.newest is not None and self.day is not None:
            states["power"] = {"value": _round(self.newest.mean_power_w, 1)}
            energy_wh = sum(e for e, _ in self.today.values())
            states["energy_today"] = {"value": _round(energy_wh / 1000.0, 3)}
            day_start = datetime.combine(self.day, datetime.min.time(), zone)
            if currency and self.month_priced:
                cost_today = sum(c for _, c in self.today.values() if c is not None)
                energy_so_far = self.month_before_today_bill + sum(self.today_bill.values())
                standing = self.terms.standing_taxed
                so_far = energy_so_far + standing * self.day.day  # every day of the month so far
                month_start = day_start.replace(day=1)
                states["cost_today"] = {"value": _round(cost_today, 2), "last_reset": _iso(day_start)}
                states["bill_so_far"] = {"value": _round(so_far, 2), "last_reset": _iso(month_start)}
                projected = self._projection(energy_so_far, month_start, zone)
                if projected is not None and self.month is not None:
                    projected += standing * calendar.monthrange(*self.month)[1]
                    states["bill_projected"] = {"value": _round(projected, 2), "last_reset": _iso(month_start)}
        if self.next_hour is not None:
            f = self.next_hour
            states["forecast_next_hour"] = {"value": _round(f.yhat_w, 1)}
            attrs["forecast_next_hour"] = {
                "lower_w": _round(f.lower_w, 1), "upper_w": _round(f.upper_w, 1), "interval": "80%",
                "starts": _iso(f.target_ts), "ends": _iso(f.target_ts + timedelta(minutes=f.resolution_min)),
                "made_at": _iso(f.made_at), "model": f.model}
        states["open_anomalies"] = {"value": len(self.open_anomalies)}
        attrs["open_anomalies"] = {"anomalies": [
            {"device": a.device_id or "home", "kind": a.kind.value, "since": _iso(a.started_at),
             "message": a.message} for a in sorted(self.open_anomalies.values(), key=lambda a: a.started_at)][:10]}
        if self.recommendations:
            top = max(self.recommendations.values(), key=lambda r: (r.money_per_month, r.kwh_per_month))
            states["top_recommendation"] = {"value": top.title[:HA_STATE_MAX]}
            attrs["top_recommendation"] = {
                "kind": top.kind, "device": top.device_id or "home", "detail": top.detail,
                "money_per_month": _round(top.money_per_month, 2), "kwh_per_month": _round(top.kwh_per_month, 1),
                "currency": top.currency, "since": _iso(top.created_at)}
        return states, attrs

    def _projection(self, so_far: float, month_start: datetime, zone: ZoneInfo) -> float | None:
        if self.newest is None or self.month_first_bucket is None or self.month is None:
            return None
        covered_from = max(month_start.astimezone(timezone.utc), self.month_first_bucket)
        covered_h = (self.newest.bucket + timedelta(minutes=1) - covered_from).total_seconds() / 3600
        if covered_h < 1:  # too little to extrapolate from
            return None
        days = calendar.monthrange(*self.month)[1]
        month_end = (month_start + timedelta(days=days + 1)).replace(day=1)
        month_h = (month_end.astimezone(timezone.utc) - month_start.astimezone(timezone.utc)).total_seconds() / 3600
        return so_far / covered_h * month_h

    def changes(self, currency: str | None) -> HaUpdate | None:
        """The sensors whose state or attributes changed since the last call (None: nothing)."""
        states, attrs = self.values(currency)
        changed_states = tuple((k, v) for k, v in states.items() if self.published.get(k) != v)
        changed_attrs = tuple((k, v) for k, v in attrs.items() if self.published.get(f"{k}@attrs") != v)
        for k, v in changed_states:
            self.published[k] = v
        for k, v in changed_attrs:
            self.published[f"{k}@attrs"] = v
        if not changed_states and not changed_attrs:
            return None
        return HaUpdate(self.home_id, changed_states, changed_attrs, currency)
