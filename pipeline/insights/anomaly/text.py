"""How numbers read to a homeowner: durations, times, power, energy and device names."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from pipeline.insights.anomaly.clock import LocalClock
from pipeline.records import DeviceKind


def duration(seconds: float, round_up: bool = False) -> str:
    """'45 s', '6 min', '2 h 10 min', '3 days 4 h'; ``round_up`` for an upper bound ("under 6 min")."""
    minutes = (math.ceil if round_up else round)(seconds / 60)
    if seconds < 60 and not round_up:
        return f"{max(0, round(seconds))} s"
    if minutes < 60:
        return f"{max(1, minutes)} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days > 1 else ''}" + (f" {hours} h" if hours else "")


def power(watts: float) -> str:
    if abs(watts) >= 1000:
        return f"{watts / 1000:.1f} kW"
    return f"{watts:.0f} W" if abs(watts) >= 10 else f"{watts:.1f} W"


def energy(wh: float) -> str:
    return f"{wh / 1000:.1f} kWh" if abs(wh) >= 100 else f"{wh:.0f} Wh"


def percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def device_name(device_id: str, kind: DeviceKind) -> str:
    """'kettle', 'washing machine', 'mains meter'; a home's total is 'home'."""
    if not device_id:
        return "home"
    name = device_id.replace("_", " ").replace("-", " ").strip()
    if kind == DeviceKind.METER and "meter" not in name:
        name += " meter"
    return name


def when(clock: LocalClock, ts: float, reference: float | None = None) -> str:
    """Local time: '14:32' on the reference's local day, else 'Tue 26 Feb 18:09'."""
    local = clock.local(ts)
    if reference is not None and clock.local(reference).date() == local.date():
        return local.strftime("%H:%M")
    return f"{local.strftime('%a')} {local.day} {local.strftime('%b %H:%M')}"


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)
