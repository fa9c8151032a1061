"""Which homes went silent: a pure count, and the small reporter thread that feeds the gauges."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from pipeline import metrics
from pipeline.logs import get_logger

log = get_logger(__name__)


def count_silent(last_seen: dict[str, datetime | None], now: datetime, threshold: timedelta) -> int:
    """Homes whose newest reading is older than ``threshold`` (a home never heard from counts)."""
    return sum(1 for seen in last_seen.values() if seen is None or now - seen > threshold)


class FleetHealthReporter(threading.Thread):
    """Every ``interval_s`` reads each home's last reading time from the store and sets
    ``shems_homes_total`` / ``shems_homes_silent``. Runs in one process of a cluster only."""

    def __init__(self, store_url: str, threshold: timedelta = timedelta(minutes=15),
                 interval_s: float = 30.0) -> None:
        super().__init__(name="fleet-health", daemon=True)
        self.store_url = store_url
        self.threshold = threshold
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        from sinks.stores import open_store

        while not self.stopped.is_set():
            try:
                store = open_store(self.store_url)
                try:
                    last_seen = store.home_last_seen()
                finally:
                    store.close()
                metrics.HOMES_TOTAL.set(len(last_seen))
                metrics.HOMES_SILENT.set(count_silent(last_seen, datetime.now(timezone.utc), self.threshold))
            except Exception as exc:  # the store may be briefly unavailable; the gauges keep their value
                log.warning("fleet_health_failed", error=repr(exc))
            self.stopped.wait(self.interval_s)
