"""A device that floods: more readings than any meter sends, which would otherwise cost every
other home its place in the flow and fill the readings table.

The budget runs on the device's own clock (its readings' time stamps), not on the wall clock: a
backlog the broker kept while the flow was down arrives all at once, but its readings are spread
over the hours it covers, so it passes; a device sending many readings for one stretch of its own
time does not. Per device, a token bucket: each reading costs one token, the device earns
``rate_per_s`` tokens per second its newest time stamp moves on, and holds at most ``burst`` (ten
hours of readings at one a second: readings without a time stamp of their own are stamped at
arrival, so a backlog of those comes with no time between them). A time stamp that does not move
the device's clock on (a repeat, one from its past) earns nothing, and no device can move its
clock far: time stamps more than ``max_future_s`` ahead of arrival are refused before this.

A refused reading is counted, not stored and not aggregated. The first one of a flood, and every
``REPORT_EVERY``-th after it, becomes a dead letter saying how many so far, so the table holds a
handful of rows for a flood of millions and the operator still sees which device and since when.
A flood is over when the device has earned its whole burst back (the readings its clock earns
meanwhile pass one by one, and do not end it).

Pure: the per-device window step (flows/logic.py, DeviceWindowLogic) keeps each device's budget
beside its windows, where the device already has state, so a budget costs no key of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pipeline.settings import FloodSettings

REPORT_EVERY = 10_000


@dataclass(slots=True)
class DeviceBudget:
    tokens: float
    newest: float  # the device's newest time stamp so far, epoch seconds
    refused: int = 0  # readings refused in the flood going on (0: none)
    refused_since: float = 0.0  # the time stamp of the flood's first refused reading

    # Snapshotted with every device's windows: a plain tuple, not the field names each time.
    def __getstate__(self) -> tuple[float, float, int, float]:
        return (self.tokens, self.newest, self.refused, self.refused_since)

    def __setstate__(self, state: tuple[float, float, int, float]) -> None:
        self.tokens, self.newest, self.refused, self.refused_since = state

    def admit(self, ts: float, settings: FloodSettings) -> int:
        """0 when the reading at ``ts`` may go on, else how many the flood has refused with it."""
        if ts > self.newest:
            self.tokens = min(float(settings.burst), self.tokens + (ts - self.newest) * settings.rate_per_s)
            self.newest = ts
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            if self.tokens >= settings.burst - 1.0:
                self.refused = 0  # earned its whole burst back: the flood is over
            return 0
        if self.refused == 0:
            self.refused_since = ts
        self.refused += 1
        return self.refused


def fresh_budget(ts: float, settings: FloodSettings) -> DeviceBudget:
    return DeviceBudget(tokens=float(settings.burst), newest=ts)


def reported(refused: int) -> bool:
    """Whether this refusal gets a dead letter: the first of a flood and every REPORT_EVERY-th."""
    return (refused - 1) % REPORT_EVERY == 0


def flood_reason(home_id: str, device_id: str, budget: DeviceBudget, settings: FloodSettings) -> str:
    since = datetime.fromtimestamp(budget.refused_since, timezone.utc)
    return (f"device {home_id}/{device_id} sends more than {settings.rate_per_s:g} readings a second of "
            f"its own clock (after {settings.burst:,} at once): readings over that are counted, not "
            f"stored, until it slows down; {budget.refused:,} refused since {since:%Y-%m-%d %H:%M:%S} UTC")
