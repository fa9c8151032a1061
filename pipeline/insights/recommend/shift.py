"""SHIFT and SOLAR: flexible appliances' runs moved to cheaper (or sunnier) hours. (one kind of ``pipeline.insights.recommend``)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.insights.recommend.history import DAYS_PER_MONTH
from pipeline.insights.recommend.window import _label, _shift_run, _ShiftTotals, _Window
from pipeline.records import DeviceKind, Recommendation

if TYPE_CHECKING:
    from pipeline.insights.recommend.recommender import HomeRecommender


def shifts(rec: HomeRecommender, w: _Window) -> list[Recommendation]:
    """load_shift per flexible device and solar_self_consumption for the home, from the runs."""
    s = rec.settings
    out: list[Recommendation] = []
    exported = np.nan_to_num(rec.home.hourly.window("exported", w.first_hour, w.hours + w.ahead_hours))
    export_quarter_wh = np.repeat(exported / 4, 4)
    solar = _ShiftTotals()
    home_days = np.nansum(rec.home.hourly.window("minutes", w.first_hour, w.hours)) / 1440
    for device_id, dev in sorted(rec.devices.items()):
        if not dev.flexible or dev.hourly is None:  # a flexible device always keeps one
            continue
        days = np.nansum(dev.hourly.window("minutes", w.first_hour, w.hours)) / 1440
        if days < s.min_days:
            continue
        span_q = int((s.ev_shift_window_h if dev.kind == DeviceKind.EV else s.shift_window_h) * 4)
        grid = _ShiftTotals()
        for run in dev.runs:
            if not w.start_s <= run.start_s < w.end_s:
                continue
            result = _shift_run(run, w, export_quarter_wh, span_q, device_id)
            if result is None:
                grid.unpriced += 1
                continue
            (solar if result.into_export else grid).add(result, device_id, w.zone)
        if grid.runs:
            out += _emit_shift(rec, w, device_id, grid, days, span_q / 4, solar.per_device[device_id])
    if solar.runs:
        out += _emit_solar(rec, w, solar, home_days, exported[: w.hours].sum() / 1000)
    return out


def _emit_shift(rec: HomeRecommender, w: _Window, device_id: str, t: _ShiftTotals, days: float,
                span_h: float, into_solar: int) -> list[Recommendation]:
    saving = t.actual - t.best
    money = saving * DAYS_PER_MONTH / days
    when = t.typical_start()
    if when is None:  # no run had a cheaper start: nothing to advise
        return []
    skipped = f" ({t.unpriced} runs without prices left out)" if t.unpriced else ""
    solar_note = (f" {into_solar} more runs, better moved into the hours your panels export, are "
                  "counted in the solar suggestion." if into_solar else "")
    detail = (
        f"{t.runs} runs of the {_label(device_id)} in the last {w.days} days ({days:.1f} days with data)"
        f"{skipped} used {t.energy_wh / 1000:.1f} kWh and cost {t.actual:.2f} {w.cur} at the times they "
        f"ran ({w.tariff.describe()}). Started at the cheapest time within {span_h:g} h of when each "
        f"began (most often {when}), priced quarter-hour by quarter-hour with its measured profile, "
        f"they would have cost {t.best:.2f} {w.cur}: {saving:.2f} {w.cur} less, {money:.2f} {w.cur} a "
        f"month. The same energy ({t.energy_wh / 1000 * DAYS_PER_MONTH / days:.1f} kWh a month) is "
        f"used, only later.{solar_note}")
    return rec.emit(w, device_id, "load_shift", f"Run the {_label(device_id)} at about {when}", detail,
                      0.0, money, False, (t.actual, t.best))


def _emit_solar(rec: HomeRecommender, w: _Window, t: _ShiftTotals, days: float,
                exported_kwh: float) -> list[Recommendation]:
    if days < rec.settings.min_days:
        return []
    saving = t.actual - t.best
    money = saving * DAYS_PER_MONTH / days
    kwh = t.absorbed_wh / 1000 * DAYS_PER_MONTH / days
    devices = " and ".join(sorted(_label(d) for d in t.devices))
    when = t.typical_start()
    if when is None:
        return []
    export_price = float(np.mean(w.export_qx[: w.hours * 4]))
    detail = (
        f"Your home exported {exported_kwh:.1f} kWh in the last {w.days} days ({days:.1f} days with "
        f"data), paid {export_price:.3f} {w.cur}/kWh on average. {t.runs} "
        f"runs of the {devices} ({t.energy_wh / 1000:.1f} kWh) could have started later (within "
        f"{rec.settings.shift_window_h:g} h) while the panels exported (most often at {t.typical_start()}): "
        f"{t.absorbed_wh / 1000:.1f} kWh would have come from the panels instead of the grid. They "
        f"cost {t.actual:.2f} {w.cur} as they ran and would have cost {t.best:.2f} {w.cur} (exported "
        f"energy used at home is worth the import price minus the export price): {money:.2f} {w.cur} and "
        f"{kwh:.1f} kWh of grid import a month.")
    return rec.emit(w, "", "solar_self_consumption",
                      f"Run the {devices} while your panels export", detail, kwh, money,
                      True, (t.actual, t.best, export_price))
