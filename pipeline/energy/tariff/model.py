"""Electricity tariffs, a home's tariff history, and vectorised cost.

A **tariff** prices imported energy (and pays for exported energy) per kWh, in one currency:

* ``flat``: one import price.
* ``tou`` (time of use): periods in the home's local wall-clock time (``start``/``end`` as
  ``HH:MM``, end exclusive, an end at or before the start wraps past midnight), on some days of the
  week and optionally some months. Outside every period the tariff's ``import_price`` applies.
  Local time is resolved with zoneinfo, so on the spring-forward day a period simply has an hour
  less, and on the fall-back day the repeated hour is priced twice by its wall-clock time.
  Periods may not overlap (a clear error names the two).
* ``dynamic``: prices from a file (CSV or Parquet, columns ``ts, import_price[, export_price]``,
  ``ts`` in UTC: an ISO time with an offset, or naive = UTC) on a regular 15-, 30- or 60-minute
  grid. Each price holds from its ``ts`` for one step. The prices are read once and kept inside
  the tariff, so a tariff rebuilt from the store does not need the file.

Export is paid at the tariff's ``export_price`` (flat, default 0), a TOU period's own
``export_price`` where one is given, or the price file's ``export_price`` column.

What a bill adds (``pipeline.energy.bill``), all optional and 0 by default: ``standing_charge``
(currency per day, for every local day the tariff is in effect at the day's start), ``levy_per_kwh``
(a per-kWh levy or duty on imported energy, e.g. Germany's Stromsteuer; taxed like the energy) and
``tax_rate`` (VAT or sales tax on the subtotal as a fraction: UK domestic VAT is 0.05). Prices are
before tax. ``base_band`` names the rate outside every TOU period on a bill ("day" for Economy 7).

A **tariff history** is a list of tariffs, each with ``effective_from``: an instant (kept in UTC).
A tariff applies from its ``effective_from`` until the next one's, so a new price never rewrites
the cost of the past. In TOML a bare date means local midnight in the tariff's time zone.

A :class:`TariffBook` holds the default history (every home) and per-home histories. A home's
history is the default up to the home's first own entry, then its own entries. One currency per
book.

TOML format (``deploy/tariffs.example.toml`` is a complete example)::

    currency = "GBP"                 # required, one per book
    timezone = "Europe/London"       # default for every tariff below (default UTC)

    [[tariff]]                       # the default history, any order
    name = "Standard"
    effective_from = 2013-01-01      # local midnight; or 2013-01-01T00:00:00Z
    kind = "flat"                    # flat | tou | dynamic
    import_price = 0.245             # currency per kWh
    export_price = 0.05              # optional, default 0

    [[tariff]]
    name = "Economy 7"
    effective_from = 2014-06-01
    kind = "tou"
    import_price = 0.28              # outside every period
    [[tariff.period]]
    name = "night"
    start = "00:30"
    end = "07:30"
    import_price = 0.09
    days = "all"                     # all | weekdays | weekends | ["mon", "sat", ...]
    # months = [11, 12, 1, 2]        # optional; all months when absent
    # export_price = 0.10            # optional; the tariff's export price when absent
    # standing_charge = 0.58, tax_rate = 0.05, levy_per_kwh = 0.0, base_band = "day"
    #                                # optional bill terms on any tariff (see above)

    [home.house7]                    # a home's own history
    timezone = "Europe/Dublin"       # optional, for this home's tariffs
    [[home.house7.tariff]]
    effective_from = 2024-01-01
    kind = "dynamic"
    price_file = "agile-2024.csv"    # relative to the TOML file

Stored form: :meth:`TariffBook.to_rows` gives one :class:`TariffRow` per tariff
(``home_id`` ``"*"`` for the default, ``effective_from``, ``spec_json``) for a
``tariffs(home_id, effective_from, spec_json)`` table, and :meth:`TariffBook.from_rows` rebuilds
the book from such rows.

Cost: :func:`with_cost` adds ``import_price``, ``export_price`` and ``cost`` to a frame of
``home_id, bucket, energy_wh``; a bucket is priced at the instant it starts, so price it at a
step no coarser than the tariff's (1-minute and 15-minute buckets are exact for every tariff
here). Negative energy is export and has a negative cost (a credit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from pipeline.records import TariffRow

DEFAULT_HOME = "*"
_MINUTES_PER_DAY = 1440
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SETS = {"all": range(7), "weekdays": range(5), "weekends": range(5, 7)}
_DYNAMIC_STEPS_S = (900, 1800, 3600)


class TariffKind(str, Enum):
    FLAT = "flat"
    TOU = "tou"
    DYNAMIC = "dynamic"


@dataclass(frozen=True, slots=True)
class TouPeriod:
    """A time-of-use period in local wall-clock time; ``end_min <= start_min`` wraps midnight."""

    name: str
    start_min: int  # minutes after local midnight
    end_min: int  # exclusive
    import_price: float
    days: tuple[int, ...] = tuple(range(7))  # Monday = 0
    months: tuple[int, ...] = ()  # empty: every month
    export_price: float | None = None

    def minutes(self) -> list[int]:
        if self.end_min > self.start_min:
            return list(range(self.start_min, self.end_min))
        return list(range(self.start_min, _MINUTES_PER_DAY)) + list(range(0, self.end_min))

    def hours_text(self) -> str:
        return f"{_hhmm(self.start_min)}–{_hhmm(self.end_min)}"


@dataclass(frozen=True, slots=True)
class PriceSeries:
    """Dynamic prices: ``import_price[i]`` holds over ``[start_s[0] + i*step_s, + step_s)``."""

    first_s: int  # epoch seconds (UTC) of the first price
    step_s: int
    import_price: tuple[float, ...]
    export_price: tuple[float, ...] | None = None

    @property
    def end_s(self) -> int:
        return self.first_s + self.step_s * len(self.import_price)


@dataclass(frozen=True, slots=True)
class Tariff:
    """One tariff of a history. Prices are in ``currency`` per kWh."""

    effective_from: datetime  # aware, UTC
    kind: TariffKind
    currency: str
    timezone: str = "UTC"
    name: str = ""
    import_price: float | None = None  # flat rate; TOU: outside every period; dynamic: unused
    export_price: float = 0.0
    periods: tuple[TouPeriod, ...] = ()
    prices: PriceSeries | None = None
    standing_charge: float = 0.0  # currency per local day
    tax_rate: float = 0.0  # fraction of the subtotal (VAT), 0.05 = 5 %
    levy_per_kwh: float = 0.0  # currency per imported kWh, before tax
    base_band: str = ""  # a bill's name for the rate outside every TOU period

    def __post_init__(self) -> None:
        _check_zone(self.timezone)
        if self.effective_from.tzinfo is None:
            raise ValueError(f"tariff {self.label}: effective_from must be timezone-aware")
        if self.kind == TariffKind.FLAT and self.import_price is None:
            raise ValueError(f"tariff {self.label}: a flat tariff needs import_price")
        if self.kind == TariffKind.TOU:
            if not self.periods:
                raise ValueError(f"tariff {self.label}: a tou tariff needs at least one period")
            _tou_tables(self)  # raises on overlaps and gaps without a base price
        if self.kind == TariffKind.DYNAMIC and self.prices is None:
            raise ValueError(f"tariff {self.label}: a dynamic tariff needs prices (price_file)")
        for value in (self.import_price, self.export_price):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"tariff {self.label}: prices must be finite numbers")
        for key in ("standing_charge", "tax_rate", "levy_per_kwh"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"tariff {self.label}: {key} must be a finite number, 0 or more")
        if self.tax_rate >= 1:
            raise ValueError(f"tariff {self.label}: tax_rate is a fraction (0.05 for 5 %), not {self.tax_rate}")

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"from {self.effective_from.isoformat()}"

    def prices_at(self, ts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(import, export) price per kWh at each UTC instant; NaN where a dynamic tariff has none.

        Ignores ``effective_from``: this is the tariff's own price rule (see :func:`history_prices`).
        """
        n = len(ts)
        if self.kind == TariffKind.FLAT:
            assert self.import_price is not None  # __post_init__ refuses a flat tariff without one
            return np.full(n, float(self.import_price)), np.full(n, self.export_price)
        if self.kind == TariffKind.TOU:
            imp_table, exp_table = _tou_tables(self)
            local = ts.dt.convert_time_zone(self.timezone)
            idx = (((local.dt.month().cast(pl.Int32) - 1) * 7 + local.dt.weekday().cast(pl.Int32) - 1)
                   * _MINUTES_PER_DAY + local.dt.hour().cast(pl.Int32) * 60
                   + local.dt.minute().cast(pl.Int32)).to_numpy()
            return imp_table[idx], exp_table[idx]
        series = self.prices
        assert series is not None
        secs = ts.dt.epoch("s").to_numpy()
        pos = (secs - series.first_s) // series.step_s
        inside = (pos >= 0) & (pos < len(series.import_price))
        safe = np.where(inside, pos, 0)
        imp = np.where(inside, np.asarray(series.import_price)[safe], np.nan)
        if series.export_price is not None:
            exp = np.where(inside, np.asarray(series.export_price)[safe], np.nan)
        else:
            exp = np.full(n, self.export_price)
        return imp, exp

    def describe(self) -> str:
        """One line for people: the kind and its prices."""
        c = self.currency
        if self.kind == TariffKind.FLAT:
            return f"flat {self.import_price:g} {c}/kWh"
        if self.kind == TariffKind.TOU:
            parts = [f"{p.name} {p.hours_text()} {p.import_price:g}" for p in self.periods]
            return f"time of use ({', '.join(parts)}, otherwise {self.import_price:g} {c}/kWh)"
        s = self.prices
        assert s is not None
        return f"dynamic ({len(s.import_price)} prices every {s.step_s // 60} min, {c}/kWh)"

    # ------------------------------------------------------------------ JSON
    def spec(self) -> dict:
        """The JSON-able spec (everything but ``effective_from``)."""
        out: dict = {"kind": self.kind.value, "currency": self.currency, "timezone": self.timezone,
                     "name": self.name, "import_price": self.import_price,
                     "export_price": self.export_price}
        if self.periods:
            out["periods"] = [
                {"name": p.name, "start": _hhmm(p.start_min), "end": _hhmm(p.end_min),
                 "import_price": p.import_price, "export_price": p.export_price,
                 "days": list(p.days), "months": list(p.months)} for p in self.periods]
        if self.prices is not None:
            out["prices"] = {"first_s": self.prices.first_s, "step_s": self.prices.step_s,
                             "import_price": list(self.prices.import_price),
                             "export_price": None if self.prices.export_price is None
                             else list(self.prices.export_price)}
        for key in ("standing_charge", "tax_rate", "levy_per_kwh"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.base_band:
            out["base_band"] = self.base_band
        return out

    @staticmethod
    def from_spec(effective_from: datetime, spec: Mapping) -> Tariff:
        prices = spec.get("prices")
        return Tariff(
            effective_from=_utc(effective_from),
            kind=TariffKind(spec["kind"]),
            currency=spec["currency"],
            timezone=spec.get("timezone", "UTC"),
            name=spec.get("name", ""),
            import_price=spec.get("import_price"),
            export_price=float(spec.get("export_price") or 0.0),
            periods=tuple(
                TouPeriod(p["name"], _minutes(p["start"]), _minutes(p["end"]), float(p["import_price"]),
                          tuple(p["days"]), tuple(p.get("months", ())), p.get("export_price"))
                for p in spec.get("periods", ())),
            prices=None if prices is None else PriceSeries(
                prices["first_s"], prices["step_s"], tuple(prices["import_price"]),
                None if prices["export_price"] is None else tuple(prices["export_price"])),
            standing_charge=float(spec.get("standing_charge") or 0.0),
            tax_rate=float(spec.get("tax_rate") or 0.0),
            levy_per_kwh=float(spec.get("levy_per_kwh") or 0.0),
            base_band=str(spec.get("base_band") or ""),
        )


@dataclass(frozen=True)
class TariffBook:
    """The default tariff history plus per-home histories (each sorted by ``effective_from``)."""

    currency: str
    default: tuple[Tariff, ...]
    homes: Mapping[str, tuple[Tariff, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.default and not self.homes:
            raise ValueError("a tariff book needs at least one tariff")
        for home, history in [(DEFAULT_HOME, self.default), *self.homes.items()]:
            for t in history:
                if t.currency != self.currency:
                    raise ValueError(f"tariff {t.label} of home {home!r} is in {t.currency}, "
                                     f"the book in {self.currency}: one currency per book")
            starts = [t.effective_from for t in history]
            if len(set(starts)) != len(starts):
                raise ValueError(f"home {home!r} has two tariffs with the same effective_from")

    def history(self, home_id: str) -> tuple[Tariff, ...]:
        """The home's tariffs in time order: the default until its first own entry, then its own."""
        own = self.homes.get(home_id, ())
        if not own:
            return self.default
        return tuple(t for t in self.default if t.effective_from < own[0].effective_from) + own

    def tariff_at(self, home_id: str, ts: datetime) -> Tariff:
        current = None
        for t in self.history(home_id):
            if t.effective_from <= ts:
                current = t
        if current is None:
            raise ValueError(_no_tariff_message(home_id, ts, self.history(home_id)))
        return current

    def timezone(self, home_id: str) -> str:
        """The home's time zone: that of its newest tariff."""
        history = self.history(home_id)
        return history[-1].timezone if history else "UTC"

    # ------------------------------------------------------------------ loading and storing

    def to_rows(self) -> list[TariffRow]:
        rows = [TariffRow(DEFAULT_HOME, t.effective_from, json.dumps(t.spec())) for t in self.default]
        for home, history in sorted(self.homes.items()):
            rows += [TariffRow(home, t.effective_from, json.dumps(t.spec())) for t in history]
        return rows

    @staticmethod
    def from_rows(rows: Iterable[TariffRow]) -> TariffBook:
        default: list[Tariff] = []
        homes: dict[str, list[Tariff]] = {}
        for row in rows:
            tariff = Tariff.from_spec(row.effective_from, json.loads(row.spec_json))
            (default if row.home_id == DEFAULT_HOME else homes.setdefault(row.home_id, [])).append(tariff)
        every = default + [t for h in homes.values() for t in h]
        if not every:
            raise ValueError("no tariff rows")
        return TariffBook(every[0].currency, _sorted(default),
                          {h: _sorted(ts) for h, ts in homes.items()})

    def to_json(self) -> str:
        return json.dumps([{"home_id": r.home_id, "effective_from": r.effective_from.isoformat(),
                            "spec": json.loads(r.spec_json)} for r in self.to_rows()])

    @staticmethod
    def from_json(text: str) -> TariffBook:
        return TariffBook.from_rows(
            TariffRow(r["home_id"], datetime.fromisoformat(r["effective_from"]), json.dumps(r["spec"]))
            for r in json.loads(text))


# ---------------------------------------------------------------------- prices and cost

def history_prices(history: Sequence[Tariff], ts: pl.Series, home_id: str = "",
                   strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(import, export) prices at UTC instants ``ts`` under a tariff history.

    ``strict``: an instant before the first tariff, or outside a dynamic tariff's prices, is an
    error; otherwise its prices are NaN.
    """
    ts = _utc_series(ts)
    n = len(ts)
    imp = np.full(n, np.nan)
    exp = np.full(n, np.nan)
    if n == 0:
        return imp, exp
    us = ts.dt.epoch("us").to_numpy()
    bounds = [_epoch_us(t.effective_from) for t in history] + [np.iinfo(np.int64).max]
    for i, tariff in enumerate(history):
        idx = np.flatnonzero((us >= bounds[i]) & (us < bounds[i + 1]))
        if idx.size:
            imp[idx], exp[idx] = tariff.prices_at(ts.gather(idx))
    if strict:
        missing = np.flatnonzero(np.isnan(imp) | np.isnan(exp))
        if missing.size:
            first = ts[int(missing[0])]
            raise ValueError(_no_tariff_message(home_id, first, history))
    return imp, exp


def price_frame(book: TariffBook, home_id: str, start: datetime, end: datetime,
                step: timedelta = timedelta(minutes=15)) -> pl.DataFrame:
    """``ts`` (UTC, slot start), ``import_price``, ``export_price`` over ``[start, end)``."""
    if end <= start:
        raise ValueError(f"price_frame: end {end.isoformat()} is not after start {start.isoformat()}")
    if step <= timedelta(0):
        raise ValueError("price_frame: step must be positive")
    ts = pl.datetime_range(_utc(start), _utc(end), step, closed="left", time_zone="UTC",
                           time_unit="us", eager=True).alias("ts")
    imp, exp = history_prices(book.history(home_id), ts, home_id)
    return pl.DataFrame({"ts": ts, "import_price": imp, "export_price": exp})


def with_cost(frame: pl.DataFrame, book: TariffBook) -> pl.DataFrame:
    """``frame`` (``home_id``, ``bucket``, ``energy_wh``, anything else) plus the prices of each
    bucket's start and its ``cost`` in the book's currency: ``energy_wh / 1000`` times the import
    price, or times the export price for negative energy (export, a negative cost)."""
    missing = {"home_id", "bucket", "energy_wh"} - set(frame.columns)
    if missing:
        raise ValueError(f"with_cost needs the columns {sorted(missing)}")
    if not isinstance(frame.schema["bucket"], pl.Datetime):
        raise ValueError(f"with_cost: bucket must be a datetime column, not {frame.schema['bucket']}")
    n = frame.height
    imp = np.full(n, np.nan)
    exp = np.full(n, np.nan)
    buckets = _utc_series(frame["bucket"])
    homes = frame["home_id"]
    for home in homes.unique().to_list():
        idx = np.flatnonzero((homes == home).to_numpy()) if homes.n_unique() > 1 else np.arange(n)
        imp[idx], exp[idx] = history_prices(book.history(home), buckets.gather(idx), home)
    energy = frame["energy_wh"].cast(pl.Float64).to_numpy()
    cost = energy / 1000.0 * np.where(energy >= 0, imp, exp)
    return frame.with_columns(pl.Series("import_price", imp), pl.Series("export_price", exp),
                              pl.Series("cost", cost))

# ---------------------------------------------------------------------- helpers

_TOU_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_OWNER_CACHE: dict[tuple, np.ndarray] = {}


def band_index(tariff: Tariff, ts: pl.Series) -> np.ndarray:
    """Which rate band prices each UTC instant: the index of the TOU period, or -1 for the
    tariff's base rate (every instant of a flat or dynamic tariff)."""
    if tariff.kind != TariffKind.TOU:
        return np.full(len(ts), -1, dtype=np.int64)
    _tou_tables(tariff)
    owner = _OWNER_CACHE[(tariff.import_price, tariff.export_price, tariff.periods)]
    local = _utc_series(ts).dt.convert_time_zone(tariff.timezone)
    idx = (((local.dt.month().cast(pl.Int32) - 1) * 7 + local.dt.weekday().cast(pl.Int32) - 1)
           * _MINUTES_PER_DAY + local.dt.hour().cast(pl.Int32) * 60
           + local.dt.minute().cast(pl.Int32)).to_numpy()
    return owner[idx].astype(np.int64)


def _tou_tables(tariff: Tariff) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price for every (month, weekday, minute of day), flattened.

    Cached by content, so pricing a year of minutes is one gather.
    """
    key = (tariff.import_price, tariff.export_price, tariff.periods)
    cached = _TOU_CACHE.get(key)
    if cached is not None:
        return cached
    owner = np.full((12, 7, _MINUTES_PER_DAY), -1, dtype=np.int16)
    imp = np.full((12, 7, _MINUTES_PER_DAY), np.nan if tariff.import_price is None else tariff.import_price)
    exp = np.full((12, 7, _MINUTES_PER_DAY), tariff.export_price, dtype=float)
    for i, p in enumerate(tariff.periods):
        months = [m - 1 for m in (p.months or range(1, 13))]
        cells = np.ix_(months, list(p.days), p.minutes())
        taken = owner[cells]
        if (taken >= 0).any():
            other = tariff.periods[int(taken[taken >= 0][0])]
            raise ValueError(f"time-of-use periods {other.name!r} and {p.name!r} overlap")
        owner[cells] = i
        imp[cells] = p.import_price
        if p.export_price is not None:
            exp[cells] = p.export_price
    if np.isnan(imp).any():
        m, d, minute = (int(v[0]) for v in np.nonzero(np.isnan(imp)))
        raise ValueError(f"no time-of-use period covers {_DAY_NAMES[d]} {_hhmm(minute)} in month {m + 1}: "
                         "set the tariff's import_price for the hours outside its periods")
    tables = imp.reshape(-1), exp.reshape(-1)
    _OWNER_CACHE[key] = owner.reshape(-1)
    _TOU_CACHE[key] = tables
    return tables


def _sorted(tariffs: Iterable[Tariff]) -> tuple[Tariff, ...]:
    return tuple(sorted(tariffs, key=lambda t: t.effective_from))


def _check_zone(zone: str, where: str = "tariff") -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{where}: unknown time zone {zone!r} (use an IANA name like Europe/London)") from None


def _minutes(text: str) -> int:
    try:
        hh, mm = str(text).split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"times are HH:MM, not {text!r}") from None
    if h == 24 and m == 0:
        return 0
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"times are HH:MM between 00:00 and 24:00, not {text!r}")
    return h * 60 + m


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"time {ts.isoformat()} has no time zone")
    return ts.astimezone(timezone.utc)


def _epoch_us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _utc_series(ts: pl.Series) -> pl.Series:
    """Datetime series in UTC (naive values are taken as UTC), microseconds."""
    dtype = ts.dtype
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"expected a datetime column, got {dtype}")
    ts = ts.dt.cast_time_unit("us")
    return ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts.dt.convert_time_zone("UTC")


def _parse_times(ts: pl.Series) -> pl.Series:
    has_offset = ts.str.contains(r"(Z|[+-]\d\d:?\d\d)$").all()
    if has_offset:
        return ts.str.to_datetime(time_zone="UTC", time_unit="us")
    return ts.str.to_datetime(time_unit="us")


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat()


def _no_tariff_message(home_id: str, ts: datetime, history: Sequence[Tariff]) -> str:
    who = f"home {home_id!r}" if home_id else "this home"
    if not history:
        return f"no tariff for {who}"
    if ts < history[0].effective_from:
        return (f"no tariff in effect for {who} at {ts.isoformat()}: its first tariff starts "
                f"{history[0].effective_from.isoformat()}")
    dyn = [t for t in history if t.kind == TariffKind.DYNAMIC and t.effective_from <= ts]
    if dyn and dyn[-1].prices is not None:
        s = dyn[-1].prices
        return (f"no dynamic price for {who} at {ts.isoformat()}: the price file covers "
                f"{_iso(s.first_s)} to {_iso(s.end_s)}")
    return f"no price for {who} at {ts.isoformat()}"
