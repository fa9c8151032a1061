"""The savings measurement's reads as they were before issue 13 batched them: one query per
recommendation and per comparison home (``git show 15d3a3c:pipeline/tools/savings_report.py``),
behind the reader interface the report measures through. Kept only as the reference tests
compare ``pipeline.tools.savings_report``'s batched reads with."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import polars as pl

from pipeline.energy.savings import BaselineModel, DailyUsage, FleetSavings, SavingsError, fit_baseline, fleet_report
from pipeline.energy.tariff import TariffBook
from pipeline.tools import savings_report
from pipeline.tools.savings_report import MAX_COMPARISON_HOMES, MeasuredRecommendation, _measure_one


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
        all_accepted = accepted if home_id is None else [
            r for r in _all_recommendations(url) if r.status == "accepted" and r.status_changed_at]
        busy = {r.recommendation.home_id for r in all_accepted}
        reader = _Reader(db, book, zones, now, homes, busy)
        out = [_measure_one(reader, stored) for stored in accepted]
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


class _Reader(savings_report._Reader):
    """The batched reader with its reads replaced by the old ones, one query per call (the
    pricing of the rows and the time zones are the report's own)."""

    def __init__(self, db, book: TariffBook | None, zones: dict[str, str], now: datetime,
                 homes: list[str], busy: set[str]) -> None:
        super().__init__(db, book, now, busy)
        self.zones, self.homes = zones, homes

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
        return self._daily(home_id, frame)

    def group(self) -> list[str]:
        # A stable sample: the same homes on every run, whatever order the store lists them in.
        return sorted((h for h in self.homes if h not in self.busy),
                      key=lambda h: hashlib.sha256(h.encode()).hexdigest())[:MAX_COMPARISON_HOMES]

    def fitted(self, home_id: str, start: datetime, split: datetime, end: datetime
               ) -> tuple[BaselineModel, list[DailyUsage]] | None:
        days = self.days(home_id, "", start, end)
        try:
            return (fit_baseline([d for d in days if d.day < split.date()]),
                    [d for d in days if d.day >= split.date()])
        except SavingsError:
            return None
