"""Tunable behaviour of the operators, in one place, with the defaults we ship."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Bounds a reading must respect; what fails is dead-lettered with the reason."""

    min_power_w: float = -100_000.0  # a large home PV/battery export
    max_power_w: float = 100_000.0  # 3-phase 100 A at 400 V is ~70 kW
    max_future_s: float = 300.0  # device clocks drift; more than this ahead is a broken clock


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """How event-time windows are closed."""

    window_s: int = 60
    # A reading may arrive this much behind the newest one seen for its device and still count.
    allowed_lateness_s: float = 10.0
    # Close a device's open windows once it has been silent this long in wall-clock time, so a
    # device that stops reporting does not hold its last minute open forever.
    idle_close_s: float = 90.0
    # Longest interval over which power is integrated into energy; a longer gap is a dropout.
    max_gap_s: float = 900.0
    # A home's minute is emitted once any device of the home is this many windows ahead of it.
    home_grace_windows: int = 2
    # A closed home minute is kept this long so a late device minute can still amend it.
    home_retention_windows: int = 10
