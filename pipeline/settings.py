"""Tunable behaviour of the operators, in one place, with the defaults we ship."""

from __future__ import annotations

import zlib
from dataclasses import MISSING, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

# Hard limits on any time stamp the decoders produce, whatever the configuration: far enough from
# datetime.min/max that no arithmetic downstream (windows, hours, days, a year of history,
# time-zone offsets) can overflow. ValidationSettings.min_ts may only narrow them.
TS_FLOOR = datetime(1900, 1, 1, tzinfo=timezone.utc)
TS_CEILING = datetime(3000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Bounds every message and reading must respect; what fails is dead-lettered with a reason
    code (pipeline.reasons) and a sentence. Size, depth, topic and id bounds are checked before
    the payload is parsed, so no message can make a parser or a store fail."""

    # The payload as received, checked before decoding; vendor frames are at most a few KB.
    max_payload_bytes: int = 65_536
    # Nesting of JSON arrays/objects; vendor frames nest 3-4 deep.
    max_json_depth: int = 32
    # The topic after the deployment prefix, and each id in it (home, device, vendor id) or from
    # the registry: PostgreSQL indexes (home_id, device_id, ts), and a B-tree entry must stay
    # under ~2.7 KB; 128 characters are at most 512 bytes of UTF-8. Ids must be printable
    # (str.isprintable: no control characters, NUL or lone surrogates) and hold no MQTT
    # separator or wildcard (/ + #).
    max_topic_chars: int = 512
    max_id_chars: int = 128
    # Time stamps: nothing before min_ts (a device whose clock never synced reports 1970 or
    # 2000), nothing more than max_future_s ahead of its arrival (device clocks drift; more
    # is a broken clock).
    min_ts: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)
    max_future_s: float = 300.0
    # Measurements must be finite and within these bounds.
    min_power_w: float = -100_000.0  # a large home PV/battery export
    max_power_w: float = 100_000.0  # 3-phase 100 A at 400 V is ~70 kW
    max_energy_wh: float = 1e10  # a counter: 100 kW for 11 years is ~1e10 Wh; >= 0 always
    min_voltage_v: float = 0.0
    max_voltage_v: float = 1_500.0  # the low-voltage limit for DC (IEC 60038), PV strings included
    min_current_a: float = -1_000.0  # some meters sign current with the direction of flow
    max_current_a: float = 1_000.0

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_json_depth", "max_topic_chars", "max_id_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"validation {name} must be at least 1")
        if self.min_ts.tzinfo is None or not TS_FLOOR <= self.min_ts < TS_CEILING:
            raise ValueError(f"validation min_ts must be a time-zone aware time in "
                             f"[{TS_FLOOR:%Y-%m-%d}, {TS_CEILING:%Y-%m-%d})")
        if not 0 <= self.max_future_s <= 366 * 86400:
            raise ValueError("validation max_future_s must be between 0 and a year")
        for low, high in (("min_power_w", "max_power_w"), ("min_voltage_v", "max_voltage_v"),
                          ("min_current_a", "max_current_a")):
            if not -1e15 <= getattr(self, low) <= getattr(self, high) <= 1e15:
                raise ValueError(f"validation {low} must not exceed {high}, both finite")
        if not 0 <= self.max_energy_wh <= 1e15:
            raise ValueError("validation max_energy_wh must be finite and >= 0")


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

    def event_time_only(self) -> WindowSettings:
        """These settings for a replay or an import: windows close on event time alone, never on
        the wall clock (a fast replay would otherwise close windows still being filled). The one
        way every replay switches the wall clock off (``shems import``, ``shems evaluate``, the
        anomaly evaluation's series)."""
        return replace(self, idle_close_s=EVENT_TIME_ONLY_IDLE_S)


# The largest budget a device may be given (the CLI's --device-rate / --device-burst check these).
MAX_DEVICE_RATE_PER_S = 1e6
MAX_DEVICE_BURST = 10**9


@dataclass(frozen=True, slots=True)
class FloodSettings:
    """How many readings a device may send per second of its own clock, after a burst
    (pipeline/ingest/flood.py; `shems run --device-rate/--device-burst`). Meters report every
    1-60 s, a Zigbee plug a few times a second at most; a flood beyond this would hold up every
    other home. The burst is ten hours at one a second: a backlog of readings without time stamps
    of their own (stamped at arrival) comes with no time between them, and a firmware loop sending
    thousands a second still meets the rate within seconds."""

    rate_per_s: float = 10.0
    burst: int = 36_000

    def __post_init__(self) -> None:
        if not (0 < self.rate_per_s <= MAX_DEVICE_RATE_PER_S and 1 <= self.burst <= MAX_DEVICE_BURST):
            raise ValueError(f"flood rate_per_s must be in (0, {MAX_DEVICE_RATE_PER_S:g}] and burst in "
                             f"[1, {MAX_DEVICE_BURST}]")


# ~3 years: an idle close never fires, and the wall time it would fire at is still a valid datetime.
EVENT_TIME_ONLY_IDLE_S = 1e8


@dataclass(frozen=True, slots=True)
class RecommendSettings:
    """How recommendations are estimated (see pipeline/recommend.py for the definitions)."""

    def __reduce__(self):
        return reduce_settings(self)

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


# ------------------------------------------------------------------ settings in snapshots

_SHARED: dict[tuple, Any] = {}


def shared_settings(cls: type, changed: tuple[tuple[str, Any], ...]) -> Any:
    """The settings object of ``cls`` with these fields changed from its defaults, one per
    distinct value in the process: every home restored from a snapshot shares its fleet's."""
    key = (cls, changed)
    try:
        found = _SHARED.get(key)
    except TypeError:  # a field value that cannot be a key (settings are frozen, so rarely)
        return cls(**dict(changed))
    if found is None:
        found = _SHARED[key] = cls(**dict(changed))
    return found


def reduce_settings(settings: Any) -> tuple:
    """``__reduce__`` of a settings dataclass: only the fields that differ from the defaults, so
    a home's snapshot does not carry its fleet's configuration field by field (and unpickling
    shares one object per distinct configuration)."""
    changed = []
    for f in fields(settings):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        # A field added after the snapshot the settings came from is at its default.
        value = getattr(settings, f.name, default)
        if value != default:
            changed.append((f.name, value))
    return shared_settings, (type(settings), tuple(changed))
