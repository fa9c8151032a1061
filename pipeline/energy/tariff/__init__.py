"""Electricity tariffs: the model (``model``: tariffs, histories, the book, prices and cost), the
TOML books (``toml``) and dynamic tariffs' price files (``prices``). The model's docstring has
the rules and the TOML format."""

from pipeline.energy.tariff.model import (
                                          DEFAULT_HOME,
                                          PriceSeries,
                                          Tariff,
                                          TariffBook,
                                          TariffKind,
                                          TouPeriod,
                                          history_prices,
                                          price_frame,
                                          with_cost,
)
from pipeline.energy.tariff.prices import load_price_file
from pipeline.energy.tariff.toml import book_from_mapping, book_from_toml

__all__ = ["DEFAULT_HOME", "PriceSeries", "Tariff", "TariffBook", "TariffKind", "TouPeriod", "book_from_mapping",
           "book_from_toml", "history_prices", "load_price_file", "price_frame", "with_cost"]
