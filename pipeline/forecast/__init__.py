"""Online per-home load forecasting (pure: no I/O). See ``home.HomeForecaster``."""

from pipeline.forecast.home import HomeForecaster
from pipeline.forecast.settings import ForecastSettings

__all__ = ["ForecastSettings", "HomeForecaster"]
