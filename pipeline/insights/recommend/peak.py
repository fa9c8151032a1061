"""PEAK: the home's use in its dearest hours. (one kind of ``pipeline.insights.recommend``)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.insights.recommend.history import DAYS_PER_MONTH
from pipeline.insights.recommend.window import _Window
from pipeline.records import Recommendation

if TYPE_CHECKING:
    from pipeline.insights.recommend.recommender import HomeRecommender


def peak(rec: HomeRecommender, w: _Window) -> list[Recommendation]:
    s = rec.settings
    prices = w.import_h
    if np.isnan(prices).any():
        return []
    threshold = np.quantile(prices, s.peak_price_quantile)
    peak = (prices > np.median(prices)) & (prices >= threshold - 1e-12)
    imported = rec.home.hourly.window("imported", w.first_hour, w.hours)
    minutes = rec.home.hourly.window("minutes", w.first_hour, w.hours)
    days_with_data = np.nansum(minutes) / 1440
    if not peak.any() or days_with_data < s.min_days:
        return []
    standby, _ = rec.always_on(w)
    flexible = np.zeros(w.hours)
    for dev in rec.devices.values():
        if dev.flexible and dev.hourly is not None:  # a flexible device always keeps one
            flexible += np.nan_to_num(dev.hourly.window("energy", w.first_hour, w.hours))
    present = peak & ~np.isnan(imported)
    peak_wh = np.nan_to_num(imported)[present]
    always_wh = (standby * np.nan_to_num(minutes) / 60)[present]
    flex_wh = flexible[present]
    rest_wh = np.maximum(0.0, peak_wh - always_wh - flex_wh)
    # The cheapest hour of each local day is where moved energy would go.
    cheapest = np.array([prices[w.local_day == d].min() for d in w.local_day])[present]
    moved_wh = rest_wh * s.peak_movable_share
    saving = float((moved_wh * (prices[present] - cheapest)).sum() / 1000)
    money = saving * DAYS_PER_MONTH / days_with_data
    moved_kwh_month = moved_wh.sum() / 1000 * DAYS_PER_MONTH / days_with_data
    label = w.peak_label(peak)
    detail = (
        f"In the last {w.days} days ({days_with_data:.1f} days with data) your home used "
        f"{peak_wh.sum() / 1000:.1f} kWh in {int(present.sum())} peak hours ({label}, "
        f"{prices[present].min():.3f} {w.cur}/kWh or more). Of that, {always_wh.sum() / 1000:.1f} kWh was always-on power "
        f"({standby:.0f} W) and {flex_wh.sum() / 1000:.1f} kWh the flexible appliances (see their own "
        f"suggestions); the other {rest_wh.sum() / 1000:.1f} kWh is cooking, lighting, laundry and the "
        f"like. If {s.peak_movable_share:.0%} of it moved to the cheapest hour of the same day "
        f"({moved_kwh_month:.1f} kWh a month), it would cost {saving:.2f} {w.cur} less over those days, "
        f"{money:.2f} {w.cur} a month.")
    return rec.emit(w, "", "peak_reduction", f"Use less in the peak hours ({label})", detail,
                      0.0, money, False, (threshold, standby, saving))
