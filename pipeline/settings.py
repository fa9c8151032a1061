"""Tunable behaviour of the operators, in one place, with the defaults we ship."""

from __future__ import annotations

import zlib
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


@dataclass(frozen=True, slots=True)
class RecommendSettings:
    """How recommendations are estimated (see pipeline/recommend.py for the definitions)."""

    history_days: int = 62  # hourly history kept per device and home
    window_days: int = 30  # "the last 30 days" every estimate looks at
    min_days: float = 7.0  # days of data a kind needs in its window before it says anything
    settle_minutes: int = 15  # the day is evaluated this long after local midnight (late minutes)
    # ... plus up to this many minutes, at a minute fixed by the home's id: a worker's homes share
    # a time zone, and evaluating them all in the same minute (25 ms each with a month of
    # history) would hold up every reading behind them for a minute or more.
    evaluate_spread_min: int = 60
    # Negligible: below this money a month (in the tariff's currency), or, for savings of energy,
    # below this many kWh a month, nothing is emitted.
    min_money_per_month: float = 0.50
    min_kwh_per_month: float = 1.0
    # Always-on power: night hours (local), an hour counts with this many minutes of data.
    night_start_h: int = 0
    night_end_h: int = 5
    night_hour_min_minutes: int = 45
    standby_percentile: float = 10.0
    # What always-on power can usually be cut to: a fridge-freezer's average plus a router.
    reachable_standby_w: float = 50.0
    # Runs of flexible appliances: on at or above run_on_w; a run ends after run_gap_min minutes
    # below it; runs under run_min_wh or longer than the maximum are not runs of the appliance.
    run_on_w: float = 20.0
    run_gap_min: int = 30
    run_min_wh: float = 100.0
    run_max_h: float = 8.0
    ev_run_max_h: float = 16.0
    # A run could have started any time from when it did until it would end this much later.
    shift_window_h: float = 12.0
    ev_shift_window_h: float = 14.0
    # Peak hours: price above the window's median and at or above this quantile of hourly prices.
    peak_price_quantile: float = 0.9
    # Share of the home's peak-hour energy (after always-on power and flexible appliances) assumed
    # movable by changed habits.
    peak_movable_share: float = 0.2
    # Usage increase: last window over the one before at least this ratio and this many kWh a day.
    increase_ratio: float = 1.5
    increase_min_kwh_per_day: float = 0.2


def home_offset_min(home_id: str, spread_min: int) -> int:
    """A minute in 0..``spread_min`` fixed by the home's id (CRC32, so the same in every process
    and after a restart): when a home does work that every home would otherwise do at once."""
    return zlib.crc32(home_id.encode()) % (spread_min + 1)
