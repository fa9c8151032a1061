"""The bounds a reading must respect. A violation is a dead letter with this reason."""

from __future__ import annotations

import math
from datetime import datetime

from pipeline.records import Reading
from pipeline.settings import ValidationSettings


def validate(reading: Reading, received_at: datetime, settings: ValidationSettings) -> str | None:
    """None when the reading is acceptable, else a sentence saying what is wrong."""
    if reading.ts.tzinfo is None:
        return "ts has no time zone"
    for name in ("power_w", "energy_wh", "voltage_v", "current_a"):
        value = getattr(reading, name)
        if value is not None and not math.isfinite(value):
            return f"{name} is not a finite number: {value!r}"
    if not settings.min_power_w <= reading.power_w <= settings.max_power_w:
        return (f"power_w {reading.power_w:g} is outside the bounds "
                f"[{settings.min_power_w:g}, {settings.max_power_w:g}] W")
    if reading.energy_wh is not None and reading.energy_wh < 0:
        return f"energy_wh {reading.energy_wh:g} is negative (a counter cannot be)"
    ahead = (reading.ts - received_at).total_seconds()
    if ahead > settings.max_future_s:
        return (f"ts {reading.ts.isoformat()} is {ahead:.0f} s in the future "
                f"(limit {settings.max_future_s:g} s)")
    return None
