"""Real slices (tests/fixtures) as device series, and the detectors run over them, for the anomaly tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pipeline.evaluation.anomaly_series import DeviceSeries, device_windows, home_windows, series_from_frame
from pipeline.ingest.tabular import TableSpec, parse_device_cols, readings_frame
from pipeline.insights.anomaly import AnomalySettings, DeviceDetector, HomeDetector
from pipeline.records import Anomaly, DeviceWindow

FIXTURES = Path(__file__).parent / "fixtures"
LONDON = "Europe/London"
BRISBANE = "Australia/Brisbane"
US = 1_000_000


def refit(name: str, columns: str) -> dict[str, DeviceSeries]:
    """A REFIT slice (wide layout as published, UK local time) as one series per device."""
    spec = TableSpec(layout="wide", ts_col="timestamp", home_col="house", device_cols=parse_device_cols(columns),
                     skip_flag_col="aggregate_missing", tz=LONDON)
    return {s.device_id: s for s in series_from_frame(readings_frame(FIXTURES / name, spec))}


def sgsc(name: str = "sgsc_6homes_10weeks.parquet") -> dict[str, DeviceSeries]:
    """SGSC homes (kWh per 30 min, AEST) as one meter series per home, with the importer's counter."""
    spec = TableSpec(layout="interval", ts_col="reading_datetime", home_col="customer_id",
                     interval_kwh_col="general_supply_kwh", tz=BRISBANE)
    return {s.home_id: s for s in series_from_frame(readings_frame(FIXTURES / name, spec))}


def run_device(windows: list[DeviceWindow], tz: str = LONDON,
               settings: AnomalySettings = AnomalySettings()) -> list[Anomaly]:
    detector = DeviceDetector(settings, tz)
    return [a for w in windows for a in detector.add(w)]


def run_home(series: DeviceSeries, tz: str = LONDON) -> list[Anomaly]:
    detector = HomeDetector(AnomalySettings(), tz)
    return [a for w in home_windows([device_windows(series)], known_meter=True) for a in detector.add(w)]


def at(series: DeviceSeries, day: float) -> float:
    """Epoch seconds ``day`` days after the series starts."""
    return series.ts[0] / US + day * 86400


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def copy(series: DeviceSeries) -> DeviceSeries:
    return DeviceSeries(series.home_id, series.device_id, series.kind, series.ts.copy(), series.power.copy(),
                        None if series.energy is None else series.energy.copy())


def minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60


def first_index_at_or_after(series: DeviceSeries, ts: float) -> int:
    return int(np.searchsorted(series.ts, int(ts * US)))
