"""A home's 1-minute total, from its devices' 1-minute windows.

The total comes from the home's ``meter`` devices when it has any (appliances are sub-loads behind
the meter and are never added to it), else from the sum of all its devices. A home "has meters"
once a meter window has been seen for it, or from the start when the registry says so.

For bucket B: ``mean_power_w``, ``energy_wh`` and ``samples`` are sums over the contributing
devices; ``min_power_w`` and ``max_power_w`` are the sums of the devices' minima and maxima. For a
home with one meter (the usual case) that is exact; with several devices it is an envelope
(bounds on the total), since devices sample asynchronously and no instantaneous sum exists.

A bucket is emitted once a device window ``home_grace_windows`` later has arrived for the home,
when the home has been silent for ``idle_close_s`` of wall time, or at the end of input. It is kept
for ``home_retention_windows`` after that: a device window arriving late for it re-emits the
bucket with the corrected total (stores upsert by bucket). Older device windows are returned as
late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipeline.ingest.idle import ClosesWhenIdle
from pipeline.records import DeviceKind, DeviceWindow, HomeWindow
from pipeline.settings import WindowSettings


@dataclass(slots=True)
class HomeOutput:
    windows: list[HomeWindow] = field(default_factory=list)
    late: list[DeviceWindow] = field(default_factory=list)


def home_window(home_id: str, bucket: datetime, windows: list[DeviceWindow],
                has_meter: bool) -> HomeWindow | None:
    """The home total for one bucket, or None when it cannot be formed (meter home, no meter)."""
    parts = [w for w in windows if w.kind == DeviceKind.METER] if has_meter else windows
    if not parts:
        return None
    return HomeWindow(
        home_id=home_id,
        bucket=bucket,
        mean_power_w=sum(w.mean_power_w for w in parts),
        min_power_w=sum(w.min_power_w for w in parts),
        max_power_w=sum(w.max_power_w for w in parts),
        energy_wh=sum(w.energy_wh for w in parts),
        samples=sum(w.samples for w in parts),
    )


class HomeAggregator(ClosesWhenIdle[HomeOutput]):
    """Buckets of one home. Picklable: Bytewax snapshots it for recovery."""

    _output = HomeOutput

    def __init__(self, settings: WindowSettings, known_meter: bool = False) -> None:
        self.settings = settings
        self.has_meter = known_meter
        self.home_id = ""
        self.buckets: dict[datetime, dict[str, DeviceWindow]] = {}
        self.emitted: set[datetime] = set()
        self.newest: datetime | None = None
        self.last_wall: datetime | None = None

    def _total(self, bucket: datetime) -> HomeWindow | None:
        return home_window(self.home_id, bucket, list(self.buckets[bucket].values()), self.has_meter)

    def add(self, window: DeviceWindow, now_wall: datetime) -> HomeOutput:
        out = HomeOutput()
        self.last_wall = now_wall
        self.home_id = window.home_id
        size = timedelta(seconds=self.settings.window_s)
        if self.newest is not None and window.bucket < self.newest - size * self.settings.home_retention_windows:
            out.late.append(window)
            return out
        if window.kind == DeviceKind.METER and not self.has_meter:
            self.has_meter = True
            # Totals already emitted summed appliances; correct those we still hold.
            for bucket in sorted(self.emitted):
                total = self._total(bucket)
                if total is not None:
                    out.windows.append(total)
        self.buckets.setdefault(window.bucket, {})[window.device_id] = window
        if window.bucket in self.emitted:
            total = self._total(window.bucket)
            if total is not None:
                out.windows.append(total)
        if self.newest is None or window.bucket > self.newest:
            self.newest = window.bucket
        self._emit_until(self.newest - size * self.settings.home_grace_windows, out, inclusive=True)
        self._forget_old()
        return out

    def _emit_until(self, limit: datetime, out: HomeOutput, inclusive: bool) -> None:
        for bucket in sorted(self.buckets):
            if bucket in self.emitted:
                continue
            if bucket > limit or (bucket == limit and not inclusive):
                break
            self.emitted.add(bucket)
            total = self._total(bucket)
            if total is not None:
                out.windows.append(total)

    def _forget_old(self) -> None:
        if self.newest is None:
            return
        size = timedelta(seconds=self.settings.window_s)
        horizon = self.newest - size * self.settings.home_retention_windows
        for bucket in [b for b in self.buckets if b < horizon and b in self.emitted]:
            del self.buckets[bucket]
            self.emitted.discard(bucket)

    def _holds_open(self) -> bool:
        return any(b not in self.emitted for b in self.buckets)

    def flush(self) -> HomeOutput:
        out = HomeOutput()
        if self.buckets:
            self._emit_until(max(self.buckets), out, inclusive=True)
        return out
