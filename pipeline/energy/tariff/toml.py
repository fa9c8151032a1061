"""Tariff books from TOML (the format is in ``pipeline.energy.tariff``'s docstring and
``deploy/tariffs.example.toml``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Literal, overload
from zoneinfo import ZoneInfo

from pipeline.energy.tariff.model import (
    _DAY_NAMES,
    _DAY_SETS,
    Tariff,
    TariffBook,
    TariffKind,
    TouPeriod,
    _check_zone,
    _hhmm,
    _minutes,
    _sorted,
    _utc,
)
from pipeline.energy.tariff.prices import load_price_file
from pipeline.tomlfile import array_of_tables, read_toml, wrong_types_are_errors


def book_from_toml(path: str | Path) -> TariffBook:
    path = Path(path)
    data = read_toml(path, "tariff file")
    with wrong_types_are_errors(str(path)):
        return book_from_mapping(data, base_dir=path.parent, source=str(path))


def book_from_mapping(data: Mapping, base_dir: Path = Path("."), source: str = "tariffs") -> TariffBook:
    """A book from parsed TOML (see the module docstring for the format)."""
    allowed = {"currency", "timezone", "tariff", "home"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; expected {sorted(allowed)}")
    currency = data.get("currency")
    if not isinstance(currency, str) or not currency:
        raise ValueError(f"{source}: set currency, e.g. currency = \"GBP\"")
    zone = data.get("timezone", "UTC")
    _check_zone(zone, source)
    default = _sorted(_parse_tariff(t, currency, zone, base_dir, f"{source}: tariff #{i + 1}")
                      for i, t in enumerate(array_of_tables(data.get("tariff"), "tariff", source)))
    homes: dict[str, tuple[Tariff, ...]] = {}
    home_tables = data.get("home") or {}
    if not isinstance(home_tables, Mapping):
        raise ValueError(f"{source}: homes are [home.<home id>] tables, not {home_tables!r}"[:200])
    for home, spec in home_tables.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"{source}: [home.{home}] must be a table")
        extra = set(spec) - {"timezone", "tariff"}
        if extra:
            raise ValueError(f"{source}: [home.{home}] has unknown keys {sorted(extra)}")
        home_zone = spec.get("timezone", zone)
        _check_zone(home_zone, f"{source}: [home.{home}]")
        if not spec.get("tariff"):
            raise ValueError(f"{source}: [home.{home}] needs at least one [[home.{home}.tariff]]")
        homes[home] = _sorted(_parse_tariff(t, currency, home_zone, base_dir,
                                            f"{source}: home {home} tariff #{i + 1}")
                              for i, t in enumerate(array_of_tables(spec["tariff"], f"home.{home}.tariff", source)))
    if not default and not homes:
        raise ValueError(f"{source}: no [[tariff]] entries")
    return TariffBook(currency, default, homes)


_TARIFF_KEYS = {"name", "effective_from", "kind", "import_price", "export_price", "period",
                "price_file", "timezone", "standing_charge", "tax_rate", "levy_per_kwh", "base_band"}
_PERIOD_KEYS = {"name", "start", "end", "import_price", "export_price", "days", "months"}


def _parse_tariff(spec: Mapping, currency: str, zone: str, base_dir: Path, where: str) -> Tariff:
    unknown = set(spec) - _TARIFF_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(_TARIFF_KEYS)}")
    zone = spec.get("timezone", zone)
    _check_zone(zone, where)
    if "effective_from" not in spec:
        raise ValueError(f"{where}: effective_from is required (a date, or a date-time with offset)")
    try:
        kind = TariffKind(spec.get("kind", "flat"))
    except ValueError:
        raise ValueError(f"{where}: kind must be flat, tou or dynamic, not {spec.get('kind')!r}") from None
    effective = _effective_from(spec["effective_from"], zone, where)
    imp = _price(spec, "import_price", where, required=kind == TariffKind.FLAT)
    periods = tuple(_parse_period(p, where) for p in array_of_tables(spec.get("period"), "period", where))
    if kind != TariffKind.TOU and periods:
        raise ValueError(f"{where}: periods belong to kind = \"tou\"")
    prices = None
    if kind == TariffKind.DYNAMIC:
        if "price_file" not in spec:
            raise ValueError(f"{where}: a dynamic tariff needs price_file")
        if not isinstance(spec["price_file"], str) or not spec["price_file"]:
            raise ValueError(f"{where}: price_file is a file name, not {spec['price_file']!r}")
        prices = load_price_file(base_dir / spec["price_file"])
    elif "price_file" in spec:
        raise ValueError(f"{where}: price_file belongs to kind = \"dynamic\"")
    try:
        return Tariff(effective, kind, currency, zone, str(spec.get("name", "")), imp,
                      _price(spec, "export_price", where) or 0.0, periods, prices,
                      standing_charge=_price(spec, "standing_charge", where) or 0.0,
                      tax_rate=_price(spec, "tax_rate", where) or 0.0,
                      levy_per_kwh=_price(spec, "levy_per_kwh", where) or 0.0,
                      base_band=str(spec.get("base_band", "")))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _parse_period(spec: Mapping, where: str) -> TouPeriod:
    unknown = set(spec) - _PERIOD_KEYS
    if unknown:
        raise ValueError(f"{where}: period has unknown keys {sorted(unknown)}")
    name = str(spec.get("name", ""))
    where = f"{where} period {name!r}" if name else f"{where} period"
    for key in ("start", "end", "import_price"):
        if key not in spec:
            raise ValueError(f"{where}: {key} is required")
    try:
        start, end = _minutes(spec["start"]), _minutes(spec["end"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if start == end:
        raise ValueError(f"{where}: start and end are equal; a period must have a length")
    days = spec.get("days", "all")
    if isinstance(days, str):
        if days not in _DAY_SETS:
            raise ValueError(f"{where}: days must be all, weekdays, weekends or a list of day names")
        day_idx = tuple(_DAY_SETS[days])
    elif not isinstance(days, list):
        raise ValueError(f"{where}: days must be all, weekdays, weekends or a list of day names, not {days!r}")
    else:
        try:
            day_idx = tuple(sorted({_DAY_NAMES.index(str(d).lower()[:3]) for d in days}))
        except ValueError:
            raise ValueError(f"{where}: unknown day in {days!r}; use mon, tue, ... sun") from None
    months_given = spec.get("months", [])
    if not isinstance(months_given, list) or any(
            isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 12 for m in months_given):
        raise ValueError(f"{where}: months must be a list of numbers 1-12")
    months = tuple(sorted(set(months_given)))
    return TouPeriod(name or _hhmm(start), start, end, _price(spec, "import_price", where, True),
                     day_idx, months, _price(spec, "export_price", where))


@overload
def _price(spec: Mapping, key: str, where: str, required: Literal[True]) -> float: ...
@overload
def _price(spec: Mapping, key: str, where: str, required: bool = False) -> float | None: ...
def _price(spec: Mapping, key: str, where: str, required: bool = False) -> float | None:
    if key not in spec:
        if required:
            raise ValueError(f"{where}: {key} is required (currency per kWh)")
        return None
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a number (currency per kWh), not {value!r}")
    return float(value)


def _effective_from(value, zone: str, where: str) -> datetime:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: effective_from {value!r} is not a date or ISO date-time") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{where}: effective_from {value} needs an offset (e.g. Z), "
                             "or give a bare date for local midnight")
        return _utc(value)
    if isinstance(value, date):
        return datetime.combine(value, time(0), ZoneInfo(zone)).astimezone(timezone.utc)
    raise ValueError(f"{where}: effective_from must be a date or a date-time, not {value!r}")
