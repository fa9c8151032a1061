"""Readings held as arrays, and the flow's operators run over them (evaluation and tests).

``DeviceSeries`` is one device's readings as numpy arrays (fault injection edits these);
``detect`` runs them through exactly what the flow runs: ``DeviceWindower`` per device, the
device windows in bucket order to ``DeviceDetector``s (their SILENT grouped by ``HomeOutage``) and, merged in bucket order, to the ``HomeAggregator`` whose
totals go to a ``HomeDetector``. It returns each anomaly once, in its final state (closed if it
closed), which is what a store keyed by ``started_at`` would hold.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl

from pipeline.ingest.home_total import HomeAggregator
from pipeline.ingest.windowing import DeviceWindower
from pipeline.insights.anomaly.device import DeviceDetector
from pipeline.insights.anomaly.home import HomeDetector
from pipeline.insights.anomaly.outage import HomeOutage
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.records import Anomaly, AnomalyKind, DeviceKind, DeviceWindow, HomeWindow, Reading, Source
from pipeline.settings import WindowSettings


@dataclass
class DeviceSeries:
    home_id: str
    device_id: str
    kind: DeviceKind
    ts: np.ndarray  # int64 epoch microseconds, increasing
    power: np.ndarray  # float64 W
    energy: np.ndarray | None = None  # float64 Wh counter (NaN where absent), None without one

    def readings(self) -> Iterator[Reading]:
        energy = self.energy.tolist() if self.energy is not None else None
        home, device, kind = self.home_id, self.device_id, self.kind
        from_ts = datetime.fromtimestamp
        utc = timezone.utc
        for i, (t, p) in enumerate(zip((self.ts / 1e6).tolist(), self.power.tolist())):
            e = energy[i] if energy is not None else None
            yield Reading(home, device, from_ts(t, utc), p, None if e != e else e, kind=kind,
                          source=Source.IMPORT)


def series_from_frame(frame: pl.DataFrame) -> list[DeviceSeries]:
    """A readings frame (``pipeline.ingest.tabular.readings_frame``) as one series per device."""
    out = []
    frame = frame.sort(["home_id", "device_id", "ts"])
    for (home, device, kind), part in frame.group_by(["home_id", "device_id", "kind"], maintain_order=True):
        energy = part["energy_wh"].cast(pl.Float64)
        out.append(DeviceSeries(
            str(home), str(device), DeviceKind(kind),
            part["ts"].dt.convert_time_zone("UTC").dt.epoch("us").to_numpy().astype(np.int64),
            part["power_w"].cast(pl.Float64).to_numpy().astype(np.float64),
            None if energy.null_count() == len(energy) else energy.fill_null(np.nan).to_numpy().astype(np.float64),
        ))
    return out


def device_windows(series: DeviceSeries, settings: WindowSettings = WindowSettings()) -> list[DeviceWindow]:
    windower = DeviceWindower(settings.event_time_only())
    out: list[DeviceWindow] = []
    for reading in series.readings():
        out.extend(windower.add(reading, reading.ts).windows)
    out.extend(windower.flush().windows)
    return out


def home_windows(windows: list[list[DeviceWindow]], settings: WindowSettings = WindowSettings(),
                 known_meter: bool = False) -> list[HomeWindow]:
    aggregator = HomeAggregator(settings.event_time_only(), known_meter=known_meter)
    if known_meter:
        # A meter home's total is its meters' sum: other windows cannot change it, so skip them.
        windows = [ws for ws in windows if ws and ws[0].kind == DeviceKind.METER]
    out: list[HomeWindow] = []
    for window in heapq.merge(*windows, key=lambda w: w.bucket):
        out.extend(aggregator.add(window, window.bucket).windows)
    out.extend(aggregator.flush().windows)
    return out


def detect(series: list[DeviceSeries], tz: str = "UTC",
           settings: AnomalySettings = AnomalySettings(),
           window_settings: WindowSettings = WindowSettings()) -> list[Anomaly]:
    """Every anomaly the detectors report for these series (one or more homes)."""
    final: dict[tuple[str, str, AnomalyKind, datetime], Anomaly] = {}

    def keep(anomalies: list[Anomaly]) -> None:
        for a in anomalies:
            final[(a.home_id, a.device_id, a.kind, a.started_at)] = a

    homes: dict[str, list[list[DeviceWindow]]] = {}
    for s in series:
        homes.setdefault(s.home_id, []).append(device_windows(s, window_settings))
    for devices in homes.values():
        # In bucket order across the home's devices, as the flow feeds them: a home's outage is
        # seen by the first device back, while the others are still quiet.
        detectors: dict[str, DeviceDetector] = {}
        outage = HomeOutage(settings)
        for window in heapq.merge(*devices, key=lambda w: w.bucket):
            keep(outage.add(detectors, window, tz))
    for home, devices in homes.items():
        has_meter = any(s.kind == DeviceKind.METER for s in series if s.home_id == home)
        home_detector = HomeDetector(settings, tz)
        for home_window in home_windows(devices, window_settings, known_meter=has_meter):
            keep(home_detector.add(home_window))
    return sorted(final.values(), key=lambda a: (a.home_id, a.device_id, a.kind.value, a.started_at))
