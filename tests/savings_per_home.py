"""The savings measurement as it was before issue 13 made it batch its reads: one query per
recommendation and per comparison home (``git show 15d3a3c:pipeline/tools/savings_report.py``).
Kept only as the reference tests compare ``pipeline.tools.savings_report`` with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import polars as pl

from pipeline.energy.savings import (
    MIN_BASELINE_DAYS,
    MIN_REPORTING_DAYS,
    BaselineModel,
    DailyUsage,
    FleetSavings,
    Savings,
    SavingsError,
    daily_usage,
    fit_baseline,
    fleet_report,
    measure_price_shift,
    measure_savings,
)
from pipeline.energy.tariff import TariffBook, with_cost

# CalTRACK fits a year, so that temperature terms see every season. Without temperatures (no
# source gives them yet) a year's seasons become noise in an intercept model; the last 90 days,
# with the comparison group carrying the drift, measured known steps better in our tests.
BASELINE_DAYS = 90
MAX_COMPARISON_HOMES = 50
SHIFT_KINDS = {"load_shift"}  # these save money by moving energy, not by using less


@dataclass(frozen=True, slots=True)
class MeasuredRecommendation:
    home_id: str
    device_id: str
    kind: str
    title: str
    accepted_at: datetime
    promised_money_per_month: float
    currency: str
    state: str  # measured | measuring | not measurable
    note: str
    savings: Savings | None = None

    @property
    def money_per_month(self) -> float | None:
        if self.savings is None or self.savings.money is None:
            return None
        return self.savings.per_month(self.savings.money)


def measure_store(url: str, home_id: str | None = None, now: datetime | None = None
                  ) -> tuple[list[MeasuredRecommendation], FleetSavings]:
    from sinks.stores import open_store
    from ui.db import Database

    now = now or datetime.now(timezone.utc)
    store = open_store(url)
    try:
        accepted = [r for r in store.recommendations(home_id)
                    if r.status == "accepted" and r.status_changed_at is not None]
        rows = store.tariffs()
        zones = {d.home_id: d.timezone for d in store.devices() if d.timezone}
        homes = sorted({d.home_id for d in store.devices()})
    finally:
        store.close()
    book = TariffBook.from_rows(rows) if rows else None
    db = Database(url, migrate=False)
    try:
        reader = _Reader(db, book, zones, now)
        all_accepted = accepted if home_id is None else [
            r for r in _all_recommendations(url) if r.status == "accepted" and r.status_changed_at]
        busy = {r.recommendation.home_id for r in all_accepted}
        out = [_measure_one(reader, stored, homes, busy) for stored in accepted]
    finally:
        db.close()
    measured = [(m.savings, m.promised_money_per_month) for m in out if m.state == "measured" and m.savings]
    return out, fleet_report(measured)


def _all_recommendations(url: str):
    from sinks.stores import open_store

    store = open_store(url)
    try:
        return store.recommendations()
    finally:
        store.close()


class _Reader:
    def __init__(self, db, book: TariffBook | None, zones: dict[str, str], now: datetime) -> None:
        self.db, self.book, self.zones, self.now = db, book, zones, now

    def zone(self, home_id: str) -> str:
        if home_id in self.zones:
            return self.zones[home_id]
        return self.book.timezone(home_id) if self.book is not None else "UTC"

    def days(self, home_id: str, device_id: str, start: datetime, end: datetime) -> list[DailyUsage]:
        db = self.db
        if device_id:
            sql = (f"SELECT {db.us('bucket')} AS bucket, power_wh AS wh, minutes FROM device_1h "
                   "WHERE home_id = :h AND device_id = :d AND bucket >= :s AND bucket < :e ORDER BY bucket")
        else:
            sql = (f"SELECT {db.us('bucket')} AS bucket, power_wh AS wh, minutes FROM home_1h "
                   "WHERE home_id = :h AND bucket >= :s AND bucket < :e ORDER BY bucket")
        frame = db.frame(sql, {"h": home_id, "d": device_id, "s": start, "e": end},
                         {"bucket": pl.Datetime("us", "UTC"), "wh": pl.Float64, "minutes": pl.Int64})
        costs: list[float | None] = [None] * frame.height
        if self.book is not None and frame.height:
            try:
                priced = with_cost(frame.with_columns(pl.lit(home_id).alias("home_id"),
                                                      pl.col("wh").alias("energy_wh")), self.book)
                costs = [None if c is None or c != c else float(c) for c in priced["cost"].to_list()]
            except ValueError:  # no tariff for part of the period: money is not measured
                pass
        return daily_usage(list(zip(frame["bucket"].to_list(), frame["wh"].to_list(),
                                    frame["minutes"].to_list(), costs)), self.zone(home_id))


def _comparison(reader: _Reader, homes: list[str], exclude: set[str], start: datetime, split: datetime,
                end: datetime) -> list[tuple[BaselineModel, list[DailyUsage]]]:
    # A stable sample: the same homes on every run, whatever order the store lists them in.
    candidates = sorted((h for h in homes if h not in exclude),
                        key=lambda h: hashlib.sha256(h.encode()).hexdigest())[:MAX_COMPARISON_HOMES]
    group = []
    for other in candidates:
        days = reader.days(other, "", start, end)
        before = [d for d in days if d.day < split.date()]
        after = [d for d in days if d.day >= split.date()]
        try:
            group.append((fit_baseline(before), after))
        except SavingsError:
            continue
    return group


def _measure_one(reader: _Reader, stored, homes: list[str], busy: set[str]) -> MeasuredRecommendation:
    rec = stored.recommendation
    accepted = stored.status_changed_at
    zone_day = accepted.astimezone(timezone.utc)
    start = zone_day - timedelta(days=BASELINE_DAYS)
    days = reader.days(rec.home_id, rec.device_id, start, reader.now)
    # The day of acceptance is neither before nor after: it is left out.
    split = accepted.date()
    before = [d for d in days if d.day < split]
    after = [d for d in days if d.day > split]

    def result(state: str, note: str, savings: Savings | None = None) -> MeasuredRecommendation:
        return MeasuredRecommendation(rec.home_id, rec.device_id, rec.kind, rec.title, accepted,
                                      rec.money_per_month, rec.currency, state, note, savings)

    if len(before) < MIN_BASELINE_DAYS and rec.kind not in SHIFT_KINDS:
        return result("not measurable", f"only {len(before)} complete days before it was accepted "
                                        f"(a baseline needs {MIN_BASELINE_DAYS})")
    if len(after) < MIN_REPORTING_DAYS:
        return result("measuring", f"{len(after)} of {MIN_REPORTING_DAYS} complete days since it was accepted")
    try:
        if rec.kind in SHIFT_KINDS:
            savings = measure_price_shift(before, after)
            return result("measured", "price paid per kWh before and after", savings)
        model = fit_baseline(before)
        price = _price_paid(after)
        group = []
        if not rec.device_id:
            group = _comparison(reader, homes, busy | {rec.home_id}, start,
                                datetime.combine(split + timedelta(days=1), datetime.min.time(), timezone.utc),
                                reader.now)
        savings = measure_savings(model, after, price, group if len(group) >= 8 else ())
        return result("measured", model.describe, savings)
    except SavingsError as exc:
        return result("not measurable", str(exc))


def _price_paid(days: list[DailyUsage]) -> float | None:
    priced = [d for d in days if d.cost is not None]
    kwh = sum(d.kwh for d in priced)
    if not priced or kwh <= 0:
        return None
    return sum(d.cost or 0.0 for d in priced) / kwh
