"""Online per-home load forecasting (pure: no I/O). See ``home.HomeForecaster``."""

from pipeline.insights.forecast.home import HomeForecaster
from pipeline.insights.forecast.settings import ForecastSettings

__all__ = ["ForecastSettings", "HomeForecaster"]
