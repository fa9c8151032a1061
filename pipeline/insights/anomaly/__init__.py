"""Streaming anomaly detection: pure, picklable per-device and per-home state objects.

``DeviceDetector`` (per device: SILENT, COUNTER_BACKWARDS, FLAT_LINE, LONG_RUNNING,
DUTY_CYCLE_DRIFT; ``HomeOutage`` makes their SILENT one anomaly of the home when most of the home
goes quiet at once) and ``HomeDetector`` (per home: HIGH_CONSUMPTION) turn 1-minute windows into
``pipeline.records.Anomaly`` records; ``AnomalySettings`` holds their tunables;
``pipeline.evaluation.anomaly`` measures them on real data with injected faults.
"""

from pipeline.insights.anomaly.device import DeviceDetector
from pipeline.insights.anomaly.home import HomeDetector
from pipeline.insights.anomaly.outage import HomeOutage
from pipeline.insights.anomaly.settings import AnomalySettings

__all__ = ["AnomalySettings", "DeviceDetector", "HomeDetector", "HomeOutage"]
