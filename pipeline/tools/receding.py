"""Receding-horizon planning inside ``shems execute --registry FILE``: every ``every`` (an hour),
each home with a battery spec in the registry gets a fresh plan for the next ``hours`` (24) from
the next slot on, with the newest prices, forecast and state of charge, which replaces the home's
whole-home plan from its start (the home's device plans carry on: ``PlanStore.activate``).

Per home, from the store and the registry (as ``shems plan --home H --store-url --registry``
builds it): prices from the stored tariffs; the base load from the home's newest stored forecast
(none: 0 W, logged); PV clear-sky from the registry's kWp and the home's location (London when it
has none, as ``shems plan``); the battery from its ``specs``, starting from the state of charge
its previous plan reaches with what the battery was measured doing since that plan's start
(``battery_soc_after``), else its spec's ``soc`` (else half full).

When a home is due is read from the store (its active whole-home plan's ``accepted_at``), so a
restarted executor keeps the rhythm. A home whose plan cannot be made (no tariff, a bad spec) is
skipped with a log line, and tried again next hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pipeline.energy.device_plan import slot_after
from pipeline.energy.optimize import PlanError, PlanProblem, base_load_from_forecasts, optimize
from pipeline.energy.plan_commands import battery_soc_after, energy_kwh
from pipeline.energy.plan_input import parse_battery_option
from pipeline.energy.solar import clear_sky_pv_w
from pipeline.energy.tariff import TariffBook, price_frame
from pipeline.ingest.registry import Registry
from pipeline.logs import get_logger
from pipeline.records import DeviceKind, Forecast, TariffRow
from sinks.rows import from_us
from ui.db import Database
from ui.plans import PlanStore

log = get_logger(__name__)

BY = "receding horizon (shems execute)"
LONDON = (51.5, -0.13)


@dataclass(frozen=True, slots=True)
class RecedingSettings:
    every: timedelta = timedelta(hours=1)
    hours: float = 24.0
    slot: timedelta = timedelta(minutes=15)


class RecedingHorizon:
    def __init__(self, db: Database, registry: Registry, settings: RecedingSettings = RecedingSettings()) -> None:
        self.db = db
        self.store = PlanStore(db)
        self.registry = registry
        self.settings = settings

    def homes(self) -> list[str]:
        """Homes with a battery spec in the registry (only a battery takes the plan's commands)."""
        return sorted({e.home_id for e in self.registry.entries() if e.kind == DeviceKind.BATTERY and e.specs})

    def poll(self, now: datetime) -> list[str]:
        """Re-plan every home that is due; the new plans' ids."""
        made = []
        for home in self.homes():
            current = self._current(home)
            if current is not None and now - current[1] < self.settings.every:
                continue
            try:
                plan_id = self.replan(home, now, current[0] if current else None)
            except (PlanError, ValueError) as exc:
                log.warning("receding_replan_failed", home=home, error=str(exc))
                continue
            made.append(plan_id)
        return made

    def _current(self, home: str) -> tuple[str, datetime] | None:
        """The home's active whole-home plan and when it was accepted."""
        rows = self.db.rows(f"SELECT plan_id, {self.db.us('accepted_at')} FROM plans WHERE home_id = :h "
                            "AND status = 'active' AND scope IS NULL ORDER BY accepted_at DESC", {"h": home})
        return (rows[0][0], from_us(int(rows[0][1]))) if rows else None

    def replan(self, home: str, now: datetime, replaces: str | None) -> str:
        s = self.settings
        start = slot_after(now, s.slot)
        n = math.ceil(timedelta(hours=s.hours) / s.slot)
        tz = self.registry.home_timezone(home, "UTC")
        book = self._book()
        prices = price_frame(book, home, start, start + s.slot * n, s.slot)
        entry = next(e for e in self.registry.home_devices(home, DeviceKind.BATTERY) if e.specs)
        given = dict(entry.specs)
        given.setdefault("soc", 0.5)
        battery = parse_battery_option(",".join(f"{k}={v:g}" for k, v in sorted(given.items())))
        soc = self._soc(replaces, entry.device_id, now)
        if soc is not None:
            soc = min(max(soc, battery.min_soc_kwh), battery.upper_kwh)
            battery = replace(battery, soc_kwh=soc)
        base = _base_load(self._forecasts(home), start, s.slot, n)
        if base is None:
            log.info("receding_no_forecast", home=home)
            base = (0.0,) * n
        kwp = sum(e.spec("kwp") or 0.0 for e in self.registry.home_devices(home, DeviceKind.PV))
        lat, lon = self.registry.home_location(home) or LONDON
        pv = clear_sky_pv_w(start, s.slot, n, kwp, lat, lon) if kwp > 0 else None
        problem = PlanProblem(start, s.slot, tuple(prices["import_price"].to_list()), tuple(base), (),
                              tuple(prices["export_price"].fill_null(0.0).to_list()), None,
                              book.currency, tz, pv, battery, None)
        plan = optimize(problem)
        plan_id = self.store.accept(home, problem, plan, BY, battery_device=entry.device_id, ev_device=None,
                                    replaces=replaces, now=now)
        log.info("receding_replanned", home=home, plan=plan_id, replaces=replaces, start=start.isoformat(),
                 cost=round(plan.cost, 4), baseline_cost=round(plan.baseline_cost, 4))
        return plan_id

    def _book(self) -> TariffBook:
        rows = self.db.rows(f"SELECT home_id, {self.db.us('effective_from')}, spec_json FROM tariffs "
                            "ORDER BY home_id, effective_from")
        if not rows:
            raise ValueError("no tariffs in the store (shems run --tariffs stores them)")
        return TariffBook.from_rows(TariffRow(h, from_us(int(t)), spec) for h, t, spec in rows)

    def _forecasts(self, home: str) -> list[Forecast]:
        us = self.db.us
        rows = self.db.rows(
            f"SELECT home_id, {us('made_at')}, {us('target_ts')}, resolution_min, horizon_min, yhat_w, lower_w, "
            f"upper_w, model FROM forecasts WHERE home_id = :h AND made_at = (SELECT max(made_at) FROM "
            "forecasts WHERE home_id = :h)", {"h": home})
        return [Forecast(h, from_us(int(m)), from_us(int(t)), int(r), int(hz), float(y), float(lo), float(hi), mo)
                for h, m, t, r, hz, y, lo, hi, mo in rows]

    def _soc(self, plan_id: str | None, device: str, now: datetime) -> float | None:
        """Where the previous plan's battery is now: its starting charge and what was measured."""
        stored = self.store.plan(plan_id) if plan_id else None
        if stored is None or stored.battery_device != device:
            return None
        p, battery = stored.problem, stored.problem.battery
        if battery is None:
            return None
        samples = self.store.samples(stored.home_id, device, p.start, now)
        charged = energy_kwh([(t, max(w, 0.0)) for t, w in samples], p.start, now)
        discharged = energy_kwh([(t, max(-w, 0.0)) for t, w in samples], p.start, now)
        return battery_soc_after(battery, charged, discharged)


def _base_load(forecasts: list[Forecast], start: datetime, slot: timedelta, n: int) -> tuple[float, ...] | None:
    """The newest forecast per slot; slots past its end take the mean of those it covers (a
    forecast made an hour ago ends an hour short of a 24-hour plan). None without a forecast."""
    if not forecasts:
        return None
    known: list[float | None] = []
    for i in range(n):
        try:
            known.append(base_load_from_forecasts(forecasts, start + slot * i, slot, 1)[0])
        except PlanError:
            known.append(None)
    values = [w for w in known if w is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    return tuple(mean if w is None else w for w in known)
