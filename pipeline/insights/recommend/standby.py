"""STANDBY: the home's always-on base load, priced. (one kind of ``pipeline.insights.recommend``)"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.insights.recommend.history import DAYS_PER_MONTH
from pipeline.insights.recommend.window import _Window
from pipeline.records import Recommendation

if TYPE_CHECKING:
    from pipeline.insights.recommend.recommender import HomeRecommender


def standby(rec: HomeRecommender, w: _Window) -> list[Recommendation]:
    s = rec.settings
    base_w, night_hours = rec.always_on(w)
    if night_hours < s.min_days * (s.night_end_h - s.night_start_h):
        return []
    cut_w = base_w - s.reachable_standby_w
    price = float(np.mean(w.import_q))
    if cut_w <= 0 or not math.isfinite(price):
        return []
    kwh = cut_w * 24 * DAYS_PER_MONTH / 1000
    money = kwh * price
    year_kwh = base_w * 24 * 365.25 / 1000
    detail = (
        f"At night ({s.night_start_h:02d}:00–{s.night_end_h:02d}:00) your home still drew about "
        f"{base_w:.0f} W at its quietest: the median, over {night_hours} night hours of the last "
        f"{w.days} days, of each hour's {s.standby_percentile:g}th-percentile minute power. Around the "
        f"clock that is {year_kwh:.0f} kWh ({year_kwh * price:.2f} {w.cur}) a year at the average "
        f"price {price:.3f} {w.cur}/kWh of the last {w.days} days. Cutting it to {s.reachable_standby_w:.0f} W "
        f"(a fridge-freezer's average plus a router) saves {cut_w:.0f} W x 24 h x "
        f"{DAYS_PER_MONTH:.1f} days = {kwh:.1f} kWh, {money:.2f} {w.cur} a month. Look for what stays "
        "on: TVs and consoles on standby, chargers, an old second fridge or freezer.")
    return rec.emit(w, "", "standby_waste", f"Cut always-on power: {base_w:.0f} W day and night",
                      detail, kwh, money, True, (base_w, price))
