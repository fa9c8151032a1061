"""USAGE_INCREASE: a device using clearly more than in the window before. (one kind of ``pipeline.insights.recommend``)"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.insights.recommend.history import _NO_USAGE_CHECK, DAYS_PER_MONTH
from pipeline.insights.recommend.window import _label, _Window
from pipeline.records import Recommendation

if TYPE_CHECKING:
    from pipeline.insights.recommend.recommender import HomeRecommender


def usage_increase(rec: HomeRecommender, w: _Window) -> list[Recommendation]:
    s = rec.settings
    out = []
    for device_id, dev in sorted(rec.devices.items()):
        if dev.kind in _NO_USAGE_CHECK or dev.hourly is None:  # the others always keep one
            continue
        recent = dev.hourly.window("energy", w.first_hour, w.hours)
        before = dev.hourly.window("energy", w.first_hour - w.hours, w.hours)
        n_recent = np.nansum(dev.hourly.window("minutes", w.first_hour, w.hours)) / 1440
        n_before = np.nansum(dev.hourly.window("minutes", w.first_hour - w.hours, w.hours)) / 1440
        if n_recent < s.min_days or n_before < s.min_days:
            continue
        per_day_recent = np.nansum(recent) / 1000 / n_recent
        per_day_before = np.nansum(before) / 1000 / n_before
        extra = per_day_recent - per_day_before
        if per_day_before <= 0 or per_day_recent < s.increase_ratio * per_day_before or \
                extra < s.increase_min_kwh_per_day:
            continue
        used = np.nan_to_num(recent)
        price = float((used * w.import_h).sum() / used.sum()) if used.sum() > 0 else math.nan
        kwh = extra * DAYS_PER_MONTH
        money = kwh * price
        ratio = per_day_recent / per_day_before
        detail = (
            f"The {_label(device_id)} used {per_day_recent:.2f} kWh a day in the last {w.days} days "
            f"({n_recent:.1f} days with data) against {per_day_before:.2f} kWh a day in the {w.days} "
            f"days before ({n_before:.1f} days with data): {ratio:.1f} times as much. Back at the "
            f"earlier level it would use {extra:.2f} kWh a day, {kwh:.1f} kWh a month less, "
            f"{money:.2f} {w.cur} at {price:.3f} {w.cur}/kWh (the average price of the hours it used "
            "energy in). Check it for a fault, a changed setting or a new habit.")
        out += rec.emit(w, device_id, "usage_increase",
                          f"The {_label(device_id)} used {ratio:.1f}x as much as the month before", detail,
                          kwh, money, True, (price, per_day_recent, per_day_before))
    return out
