"""Money: prices energy frames with the store's tariff book (``pipeline.energy.tariff``).

``Pricing.price`` takes a frame with ``home_id``, ``bucket`` (start, UTC) and ``energy_wh`` and adds
``import_price``, ``export_price`` (per kWh) and ``cost``; negative energy (export) is credited at
the export price. The book comes from the store's ``tariffs`` table; with no tariff there, or for
instants before a home's first tariff, the flat price of the settings
(``SHEMS_UI_FLAT_PRICE_PER_KWH``) applies, and ``source`` says so on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import numpy as np
import polars as pl

from pipeline.energy.tariff import TariffBook, history_prices, price_frame
from pipeline.records import TariffRow
from sinks.rows import from_us


@dataclass(frozen=True)
class Pricing:
    currency: str
    flat_price_per_kwh: float
    source: str  # one line for the page: where the prices come from
    book: TariffBook | None = None

    def price(self, frame: pl.DataFrame) -> pl.DataFrame:
        n = frame.height
        imp = np.full(n, self.flat_price_per_kwh)
        exp = np.zeros(n)
        if self.book is not None and n:
            homes = frame["home_id"]
            for home in homes.unique().to_list():
                idx = np.flatnonzero((homes == home).to_numpy())
                got_imp, got_exp = history_prices(self.book.history(home), frame["bucket"].gather(idx),
                                                  home, strict=False)
                known = ~np.isnan(got_imp)
                imp[idx[known]] = got_imp[known]
                exp[idx[known]] = np.nan_to_num(got_exp[known])
        energy = frame["energy_wh"].cast(pl.Float64).to_numpy()
        cost = energy / 1000.0 * np.where(energy >= 0, imp, exp)
        return frame.with_columns(pl.Series("import_price", imp), pl.Series("export_price", exp),
                                  pl.Series("cost", cost))

    def mean_import_price(self, home_id: str, now: datetime) -> float:
        """The average import price over the coming week: what an always-on watt costs."""
        if self.book is None:
            return self.flat_price_per_kwh
        try:
            week = price_frame(self.book, home_id, now, now + timedelta(days=7), timedelta(minutes=15))
        except ValueError:  # no tariff covers the coming week (a dynamic file ended)
            return self.flat_price_per_kwh
        # polars types an aggregate as any literal; a Float64 column's mean is a float
        return float(cast(float, week["import_price"].mean()))


def load_pricing(db, settings) -> Pricing:
    rows = db.rows(f"SELECT home_id, {db.us('effective_from')}, spec_json FROM tariffs "
                   "ORDER BY home_id, effective_from")
    flat = f"flat {settings.flat_price_per_kwh:.2f} {settings.currency}/kWh"
    if not rows:
        return Pricing(settings.currency, settings.flat_price_per_kwh,
                       f"{flat} (no tariff in the store)")
    book = TariffBook.from_rows(TariffRow(h, from_us(t), spec)
                                for h, t, spec in rows)
    return Pricing(book.currency, settings.flat_price_per_kwh,
                   f"the store's tariffs ({len(rows)}); {flat} before a home's first", book)
