"""What `shems plan` reads: deferrable loads from a TOML file or ``--load`` options, and the
planning horizon they span.

``--load name,kwh,hours,earliest,deadline`` (e.g. ``dishwasher,1.2,2,19:00,07:00``). A loads
TOML file holds any number of::

    [[load]]
    name = "dishwasher"
    energy_kwh = 1.2          # or power_w = 600
    hours = 2                 # how long it runs
    earliest = "19:00"        # local time on the planning day, or an ISO date-time with offset
    deadline = "07:00"        # at or before `earliest`: the next day
    interruptible = false     # true: may pause between slots (an EV charger)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.energy.optimize import Battery, DeferrableLoad, EvCharge
from pipeline.tomlfile import array_of_tables, read_toml, wrong_types_are_errors


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """A load as the user wrote it; times are resolved against a day and a time zone later."""

    name: str
    hours: float
    earliest: str
    deadline: str
    energy_kwh: float | None = None
    power_w: float | None = None
    interruptible: bool = False


def parse_load_option(text: str) -> LoadSpec:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 5 or not parts[0]:
        raise ValueError(f"--load {text!r}: expected name,kwh,hours,earliest,deadline "
                         "e.g. dishwasher,1.2,2,19:00,07:00")
    name, kwh, hours, earliest, deadline = parts
    spec = LoadSpec(name, _positive(hours, f"--load {name}: hours"), earliest, deadline,
                    energy_kwh=_positive(kwh, f"--load {name}: kwh"))
    _check_time(spec.earliest, f"--load {name}: earliest")
    _check_time(spec.deadline, f"--load {name}: deadline")
    return spec


_LOAD_KEYS = {"name", "energy_kwh", "power_w", "hours", "earliest", "deadline", "interruptible"}


def load_specs_from_toml(path: Path) -> list[LoadSpec]:
    data = read_toml(path, "loads file")
    with wrong_types_are_errors(str(path)):
        return _load_specs(data, path)


def _load_specs(data: Mapping, path: Path) -> list[LoadSpec]:
    entries = array_of_tables(data.get("load"), "load", str(path))
    if not entries:
        raise ValueError(f"{path}: no [[load]] entries")
    specs = []
    for i, entry in enumerate(entries):
        where = f"{path}: load #{i + 1}"
        unknown = set(entry) - _LOAD_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(_LOAD_KEYS)}")
        for key in ("name", "hours", "earliest", "deadline"):
            if key not in entry:
                raise ValueError(f"{where}: {key} is required")
        where = f"{path}: load {entry['name']!r}"
        if ("energy_kwh" in entry) == ("power_w" in entry):
            raise ValueError(f"{where}: give either energy_kwh or power_w")
        for key in ("earliest", "deadline"):
            _check_time(str(entry[key]), f"{where}: {key}")
        specs.append(LoadSpec(
            str(entry["name"]), _positive(entry["hours"], f"{where}: hours"), str(entry["earliest"]),
            str(entry["deadline"]),
            energy_kwh=_positive(entry["energy_kwh"], f"{where}: energy_kwh") if "energy_kwh" in entry else None,
            power_w=_positive(entry["power_w"], f"{where}: power_w") if "power_w" in entry else None,
            interruptible=bool(entry.get("interruptible", False))))
    return specs


def resolve_loads(specs: list[LoadSpec], day: date, tz: str) -> tuple[DeferrableLoad, ...]:
    """Loads with aware times: HH:MM is on ``day`` in ``tz``; a deadline at or before the
    earliest start is on the next day."""
    zone = ZoneInfo(tz)
    loads = []
    for s in specs:
        earliest = _resolve(s.earliest, day, zone)
        deadline = _resolve(s.deadline, day, zone)
        if _is_clock(s.deadline) and deadline <= earliest:
            deadline = _resolve(s.deadline, day + timedelta(days=1), zone)
        duration = timedelta(hours=s.hours)
        if s.energy_kwh is not None:
            loads.append(DeferrableLoad.from_energy(s.name, s.energy_kwh, duration, earliest, deadline,
                                                    s.interruptible))
        else:
            assert s.power_w is not None  # the parser requires energy_kwh or power_w
            loads.append(DeferrableLoad(s.name, float(s.power_w), duration, earliest, deadline,
                                        s.interruptible))
    return tuple(loads)


def horizon(loads: tuple[DeferrableLoad, ...], slot: timedelta) -> tuple[datetime, int]:
    """The slot-aligned (UTC epoch) span from the earliest start to the last deadline."""
    slot_s = slot.total_seconds()
    first = min(load.earliest for load in loads).timestamp()
    last = max(load.deadline for load in loads).timestamp()
    start_s = math.floor(first / slot_s) * slot_s
    n = math.ceil((last - start_s) / slot_s)
    return datetime.fromtimestamp(start_s, timezone.utc), n


def _is_clock(text: str) -> bool:
    return len(text) <= 5 and ":" in text


def _check_time(text: str, where: str) -> None:
    try:
        _resolve(text, date(2000, 1, 1), ZoneInfo("UTC"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _resolve(text: str, day: date, zone: ZoneInfo) -> datetime:
    if _is_clock(text):
        try:
            hh, mm = text.split(":")
            clock = time(int(hh), int(mm))
        except ValueError:
            raise ValueError(f"{text!r} is not a time HH:MM") from None
        # A wall time skipped by a spring-forward change is read with the offset before the
        # change (zoneinfo's fold=0): 01:30 on that day in London is 02:30 BST.
        return datetime.combine(day, clock, zone).astimezone(timezone.utc)
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not HH:MM or an ISO date-time") from None
    if ts.tzinfo is None:
        raise ValueError(f"{text!r} needs an offset (e.g. +01:00), or use HH:MM for local time")
    return ts.astimezone(timezone.utc)


def _positive(value, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, not {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{where} must be a number > 0, not {value!r}")
    return number


# ---------------------------------------------------------------------- battery and EV options

_BATTERY_KEYS = {"capacity_kwh", "power_kw", "charge_kw", "discharge_kw", "efficiency", "soc",
                 "min_soc", "max_soc", "end_soc"}


def _key_values(text: str, option: str, allowed: set[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"{option} {text!r}: expected key=value pairs separated by commas")
        if key not in allowed:
            raise ValueError(f"{option}: unknown key {key!r}; expected some of {sorted(allowed)}")
        pairs[key] = value.strip()
    return pairs


def _share(value: str, where: str) -> float:
    """A state of charge as a share of capacity: 0.5 or 50%."""
    text = value.strip()
    scale = 100.0 if text.endswith("%") else 1.0
    try:
        number = float(text.rstrip("%")) / scale
    except ValueError:
        raise ValueError(f"{where} must be a share of capacity such as 0.5 or 50%, not {value!r}") from None
    if not 0 <= number <= 1:
        raise ValueError(f"{where} must lie between 0 and 1 (0% and 100%), not {value!r}")
    return number


def parse_battery_option(text: str) -> Battery:
    """``capacity_kwh=10,power_kw=5,efficiency=0.9,soc=0.5`` (states of charge as shares of the
    capacity; ``charge_kw``/``discharge_kw`` when they differ; ``min_soc``, ``max_soc``,
    ``end_soc`` optional)."""
    kv = _key_values(text, "--battery", _BATTERY_KEYS)
    if "capacity_kwh" not in kv:
        raise ValueError("--battery: capacity_kwh is required")
    capacity = _positive(kv["capacity_kwh"], "--battery capacity_kwh")
    if "power_kw" not in kv and not {"charge_kw", "discharge_kw"} <= kv.keys():
        raise ValueError("--battery: give power_kw (or charge_kw and discharge_kw)")
    charge = _positive(kv.get("charge_kw", kv.get("power_kw")), "--battery charge power")
    discharge = _positive(kv.get("discharge_kw", kv.get("power_kw")), "--battery discharge power")
    efficiency = _positive(kv.get("efficiency", "0.9"), "--battery efficiency")
    if efficiency > 1:
        raise ValueError(f"--battery efficiency is a round-trip share such as 0.9, not {efficiency:g}")
    soc = _share(kv.get("soc", "0.5"), "--battery soc")
    low = _share(kv.get("min_soc", "0"), "--battery min_soc")
    high = _share(kv.get("max_soc", "1"), "--battery max_soc")
    if not low <= soc <= high:
        raise ValueError(f"--battery: soc {soc:g} must lie between min_soc {low:g} and max_soc {high:g}")
    end = _share(kv["end_soc"], "--battery end_soc") if "end_soc" in kv else None
    return Battery(capacity, charge * 1000.0, discharge * 1000.0, efficiency, soc * capacity,
                   low * capacity, high * capacity, None if end is None else end * capacity)


@dataclass(frozen=True, slots=True)
class EvSpec:
    """An EV charge as the user wrote it; times resolved against a day and time zone later."""

    energy_kwh: float
    power_kw: float
    deadline: str
    earliest: str | None = None
    min_power_kw: float = 0.0


_EV_KEYS = {"energy_kwh", "power_kw", "deadline", "earliest", "min_power_kw"}


def parse_ev_option(text: str) -> EvSpec:
    """``energy_kwh=20,power_kw=7.4,deadline=07:00[,earliest=18:00,min_power_kw=1.4]``."""
    kv = _key_values(text, "--ev", _EV_KEYS)
    for key in ("energy_kwh", "power_kw", "deadline"):
        if key not in kv:
            raise ValueError(f"--ev: {key} is required")
    for key in ("deadline", "earliest"):
        if key in kv:
            _check_time(kv[key], f"--ev {key}")
    minimum = kv.get("min_power_kw", "0")
    try:
        min_kw = float(minimum)
    except ValueError:
        raise ValueError(f"--ev min_power_kw must be a number, not {minimum!r}") from None
    spec = EvSpec(_positive(kv["energy_kwh"], "--ev energy_kwh"), _positive(kv["power_kw"], "--ev power_kw"),
                  kv["deadline"], kv.get("earliest"), min_kw)
    if not 0 <= spec.min_power_kw <= spec.power_kw:
        raise ValueError("--ev min_power_kw must lie between 0 and power_kw")
    return spec


def resolve_ev(spec: EvSpec, start: datetime, tz: str) -> EvCharge:
    """The EV charge with aware times: HH:MM on the plan's first local day, a deadline at or
    before the earliest start on the next day; no earliest start means the plan's start."""
    zone = ZoneInfo(tz)
    day = start.astimezone(zone).date()
    earliest = start if spec.earliest is None else _resolve(spec.earliest, day, zone)
    deadline = _resolve(spec.deadline, day, zone)
    if _is_clock(spec.deadline) and deadline <= earliest:
        deadline = _resolve(spec.deadline, day + timedelta(days=1), zone)
    return EvCharge(spec.energy_kwh, spec.power_kw * 1000.0, earliest, deadline, spec.min_power_kw * 1000.0)


def plan_start(day: date | None, tz: str, now: datetime, slot: timedelta) -> datetime:
    """Where a plan without loads starts: the day's local midnight, or the next slot from now."""
    if day is not None:
        return datetime.combine(day, time(0, 0), ZoneInfo(tz)).astimezone(timezone.utc)
    slot_s = slot.total_seconds()
    return datetime.fromtimestamp(math.ceil(now.timestamp() / slot_s) * slot_s, timezone.utc)
