"""Measured savings of accepted recommendations, read from a store (``shems savings``).

For each recommendation a homeowner accepted: the home's (or, for a device's advice, the device's)
daily energy before the acceptance is the baseline, the days after it the reporting period; the
methods are in :mod:`pipeline.energy.savings`. Home-level advice is measured against a comparison
group of homes with no advice accepted in the same period, when there are enough of them.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

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
from pipeline.records import Recommendation, TariffRow
from sinks.base import StoredRecommendation
from sinks.rows import from_us

if TYPE_CHECKING:
    from ui.db import Schema

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
    from ui.db import Database

    db = Database(url, migrate=False)
    try:
        return measure_db(db, home_id, now)
    finally:
        db.close()


def measure_db(db, home_id: str | None = None, now: datetime | None = None
               ) -> tuple[list[MeasuredRecommendation], FleetSavings]:
    """``measure_store`` on an open ``ui.db.Database`` (the viewer's own). A fixed number of
    statements whatever the fleet's size: the accepted recommendations, the tariffs, and the
    hourly rows of every home (or device) measured and of the comparison group, each read in
    batches of ``KEYS_PER_QUERY`` keys (it was one query per recommendation and per comparison
    home: 51 for one home-level recommendation)."""
    now = now or datetime.now(timezone.utc)
    us = db.us
    every = [_recommendation(row) for row in db.rows(
        f"SELECT home_id, kind, device_id, {us('created_at')}, {us('updated_at')}, title, detail, "
        f"kwh_per_month, money_per_month, currency, status, {us('status_changed_at')}, "
        "status_changed_by FROM recommendations WHERE status = 'accepted' "
        "AND status_changed_at IS NOT NULL ORDER BY home_id, kind, device_id")]
    accepted = [r for r in every if home_id is None or r.recommendation.home_id == home_id]
    if not accepted:
        return [], fleet_report([])
    rows = [TariffRow(h, from_us(t), spec) for h, t, spec in db.rows(
        f"SELECT home_id, {us('effective_from')}, spec_json FROM tariffs ORDER BY home_id, effective_from")]
    book = TariffBook.from_rows(rows) if rows else None
    busy = {r.recommendation.home_id for r in every}
    reader = _Reader(db, book, now, busy)
    reader.prefetch([(r.recommendation.home_id, r.recommendation.device_id, _start(r)) for r in accepted])
    # The comparison group's rows are read (once, for every home-level measurement) only when a
    # measurement gets that far: from the earliest such baseline.
    reader.group_since = min((_start(r) for r in accepted if not r.recommendation.device_id), default=None)
    out = [_measure_one(reader, stored) for stored in accepted]
    measured = [(m.savings, m.promised_money_per_month) for m in out if m.state == "measured" and m.savings]
    return out, fleet_report(measured)


KEYS_PER_QUERY = 500  # homes (or devices) per query: well inside SQLite's 32,766 parameters


def _recommendation(row: tuple) -> StoredRecommendation:
    h, k, d, created, updated, title, detail, kwh, money, cur, status, changed, by = row
    return StoredRecommendation(Recommendation(h, d, k, from_us(created), title, detail, kwh, money, cur),
                                from_us(updated), status, from_us(changed), by)


def _start(stored: StoredRecommendation) -> datetime:
    assert stored.status_changed_at is not None
    return stored.status_changed_at.astimezone(timezone.utc) - timedelta(days=BASELINE_DAYS)


_HOURS: Schema = {"bucket": pl.Datetime("us", "UTC"), "wh": pl.Float64, "minutes": pl.Int64}


class _Reader:
    """The hourly rows the measurements need, read in a few batched queries and then served per
    home (or device) and period from memory; the days and baselines derived from them are kept,
    since recommendations accepted in the same hour share the comparison group's."""

    def __init__(self, db, book: TariffBook | None, now: datetime, busy: set[str]) -> None:
        self.db, self.book, self.now, self.busy = db, book, now, busy
        self.hours: dict[tuple[str, str], tuple[list[datetime], pl.DataFrame]] = {}
        self.zones: dict[str, str] = {}
        self.group_since: datetime | None = None
        self._group: list[str] | None = None
        self._days: dict[tuple[str, str, int, int], list[DailyUsage]] = {}
        self._fits: dict[tuple[str, int, int, date], tuple[BaselineModel, list[DailyUsage]] | None] = {}

    def zone(self, home_id: str) -> str:
        if home_id in self.zones:
            return self.zones[home_id]
        return self.book.timezone(home_id) if self.book is not None else "UTC"

    def prefetch(self, keys: list[tuple[str, str, datetime]]) -> None:
        """Read every (home, device) key's hourly rows from its earliest start to now ("" for the
        home's own rows): one query per KEYS_PER_QUERY keys."""
        since: dict[tuple[str, str], datetime] = {}
        for home, device, start in keys:
            since[(home, device)] = min(start, since.get((home, device), start))
        todo = [k for k in since if k not in self.hours]
        self._read_zones(sorted({h for h, _ in todo}))
        for level in ("", "device"):
            wanted = [k for k in todo if bool(k[1]) == bool(level)]
            for i in range(0, len(wanted), KEYS_PER_QUERY):
                self._read(wanted[i:i + KEYS_PER_QUERY], since, level)

    def _read_zones(self, homes: list[str]) -> None:
        # The zone of a home's last device (by id) that names one, as the device registry lists it.
        for i in range(0, len(homes), KEYS_PER_QUERY):
            names = {f"h{j}": h for j, h in enumerate(homes[i:i + KEYS_PER_QUERY])}
            for home, zone in self.db.rows(
                    "SELECT home_id, timezone FROM devices WHERE timezone IS NOT NULL AND timezone <> '' "
                    f"AND home_id IN ({', '.join(':' + n for n in names)}) ORDER BY home_id, device_id",
                    names):
                self.zones[home] = zone

    def _read(self, keys: list[tuple[str, str]], since: dict[tuple[str, str], datetime], level: str) -> None:
        db = self.db
        params: dict[str, object] = {"e": self.now}
        values = []
        for j, (home, device) in enumerate(keys):
            params[f"h{j}"], params[f"s{j}"] = home, since[(home, device)]
            if level:
                params[f"d{j}"] = device
                values.append(f"(:h{j}, :d{j}, :s{j})")
            else:
                values.append(f"(:h{j}, :s{j})")
        if level:
            sql = ("WITH w (home_id, device_id, s) AS (VALUES " + ", ".join(values) + ") "
                   f"SELECT m.home_id, m.device_id, {db.us('m.bucket')} AS bucket, m.power_wh AS wh, "
                   "m.minutes FROM w JOIN device_1h m ON m.home_id = w.home_id "
                   "AND m.device_id = w.device_id AND m.bucket >= w.s AND m.bucket < :e "
                   "ORDER BY m.home_id, m.device_id, m.bucket")
        else:
            sql = ("WITH w (home_id, s) AS (VALUES " + ", ".join(values) + ") "
                   f"SELECT m.home_id, '' AS device_id, {db.us('m.bucket')} AS bucket, "
                   "m.power_wh AS wh, m.minutes FROM w JOIN home_1h m ON m.home_id = w.home_id "
                   "AND m.bucket >= w.s AND m.bucket < :e ORDER BY m.home_id, m.bucket")
        frame = db.frame(sql, params, {"home_id": pl.Utf8, "device_id": pl.Utf8, **_HOURS})
        parts = {(h, d): g for (h, d), g in frame.partition_by(["home_id", "device_id"], as_dict=True,
                                                               maintain_order=True).items()}
        empty = frame.select(list(_HOURS)).clear()
        for key in keys:
            part = parts.get(key)
            part = empty if part is None else part.select(list(_HOURS))
            self.hours[key] = (part["bucket"].to_list(), part)

    def days(self, home_id: str, device_id: str, start: datetime, end: datetime) -> list[DailyUsage]:
        if (home_id, device_id) not in self.hours:
            self.prefetch([(home_id, device_id, start)])
        buckets, rows = self.hours[(home_id, device_id)]
        lo, hi = bisect_left(buckets, start), bisect_left(buckets, end)
        key = (home_id, device_id, lo, hi)
        if key not in self._days:
            self._days[key] = self._daily(home_id, rows.slice(lo, hi - lo))
        return self._days[key]

    def _daily(self, home_id: str, frame: pl.DataFrame) -> list[DailyUsage]:
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

    def group(self) -> list[str]:
        """The comparison candidates: a stable sample of the homes with no advice accepted (the
        same homes on every run, whatever order the store lists them in), their rows read."""
        if self._group is None:
            homes = [h for (h,) in self.db.rows("SELECT DISTINCT home_id FROM devices")]
            self._group = sorted((h for h in homes if h not in self.busy),
                                 key=lambda h: hashlib.sha256(h.encode()).hexdigest())[:MAX_COMPARISON_HOMES]
            if self.group_since is not None:
                self.prefetch([(h, "", self.group_since) for h in self._group])
        return self._group

    def fitted(self, home_id: str, start: datetime, split: datetime, end: datetime
               ) -> tuple[BaselineModel, list[DailyUsage]] | None:
        """A comparison home's baseline before ``split`` and its days after, or None when it has
        too little history for a baseline."""
        buckets, _ = self.hours[(home_id, "")]
        key = (home_id, bisect_left(buckets, start), bisect_left(buckets, end), split.date())
        if key not in self._fits:
            days = self.days(home_id, "", start, end)
            before = [d for d in days if d.day < split.date()]
            after = [d for d in days if d.day >= split.date()]
            try:
                self._fits[key] = (fit_baseline(before), after)
            except SavingsError:
                self._fits[key] = None
        return self._fits[key]


def _comparison(reader: _Reader, start: datetime, split: datetime, end: datetime
                ) -> list[tuple[BaselineModel, list[DailyUsage]]]:
    return [fit for other in reader.group() if (fit := reader.fitted(other, start, split, end)) is not None]


def _measure_one(reader: _Reader, stored: StoredRecommendation) -> MeasuredRecommendation:
    rec = stored.recommendation
    accepted = stored.status_changed_at
    assert accepted is not None
    start = _start(stored)
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
            group = _comparison(reader, start,
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
