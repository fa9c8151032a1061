"""CSV and Parquet files to readings: the importer's, the replayer's and the evaluator's input.

Three layouts, all read with polars:

* **long**: one row per reading, columns ``ts, home_id, device_id, power_w[, energy_wh][, kind]``
  (names configurable);
* **wide** (REFIT, UK-DALE): one row per time, one column per device, e.g.
  ``--device-cols aggregate_w=mains:meter,kettle_w=kettle``; a ``--skip-flag-col`` names a boolean
  column marking rows the dataset's publisher filled in, which are dropped;
* **interval** (SGSC): one row per interval with its energy in kWh. Each becomes a reading at the
  interval start with the interval's mean power and a cumulative counter per home (including that
  interval), so the windowing computes each interval's energy exactly from counter deltas.

A CSV is read as text and every cell is parsed here, column-wise and tolerantly: one cell that
is not a number or a time stamp rejects its own row with a reason instead of failing the whole
file (polars' own type inference would). Time stamps are ISO 8601 (``T`` or a space, optional
fraction, optional offset or ``Z``) or epoch seconds / milliseconds, as the flow accepts. Naive
timestamps are local time in ``tz`` (default UTC); ambiguous times (the repeated autumn hour)
take the earlier instant; nonexistent ones (the skipped spring hour) are rejected, since no clock
ever showed them.

:func:`check_file` is the importer's entry: every row is checked (parse errors, ids, kinds, and
the flow's value bounds from ``ValidationSettings``) with polars expressions, and what fails
comes back as rows with an error code and a sentence. :func:`validated_batches` then runs the
flow's own :func:`pipeline.ingest.validation.validate` on each reading as it is built, so a bound added
there applies to imports too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from pipeline.ingest.validation import check_reading, validate
from pipeline.records import DeadLetter, DeviceKind, Reading, Source
from pipeline.settings import ValidationSettings

COLUMNS = ["home_id", "device_id", "kind", "ts", "power_w", "energy_wh"]
ROW = "__row"  # 1-based number of the data row in the file (the header is not counted)
KINDS = tuple(k.value for k in DeviceKind)
# Ids end up as MQTT topic levels (the viewer's commands) and in PostgreSQL primary keys: bounded,
# printable, and free of the topic separators and wildcards, like the ids the flow can receive.
ID_MAX_CHARS = 128
# What str.isprintable() refuses (controls, format characters, separators other than the space)
# and the MQTT separator and wildcards, as a regular expression for polars.
_ID_FORBIDDEN = r"[\p{C}\p{Zl}\p{Zp}/+#]|[\p{Zs}&&[^ ]]"
_SHOWN_CHARS = 60  # of a bad cell quoted in a reason

_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
                  "%Y-%m-%d")
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z",
                  "%Y-%m-%d %H:%M%#z")
# Python's datetime (which a Reading holds) spans years 1-9999; polars' spans far more.
_TS_MIN = datetime(1, 1, 2, tzinfo=timezone.utc)
_TS_MAX = datetime(9999, 12, 30, tzinfo=timezone.utc)


@dataclass(frozen=True)
class DeviceColumn:
    column: str
    device_id: str
    kind: DeviceKind = DeviceKind.APPLIANCE


@dataclass(frozen=True)
class TableSpec:
    layout: str = "long"  # long | wide | interval
    ts_col: str = "ts"
    home_col: str | None = "home_id"
    home_id: str | None = None  # a fixed home when the file has no home column
    device_col: str = "device_id"
    power_col: str = "power_w"
    energy_col: str | None = "energy_wh"
    kind_col: str | None = "kind"
    device_cols: tuple[DeviceColumn, ...] = ()
    skip_flag_col: str | None = None
    interval_kwh_col: str | None = None
    interval: timedelta = timedelta(minutes=30)
    interval_end: bool = False
    tz: str = "UTC"
    # What one unit of the power and energy columns is in W and Wh: exports in kW and kWh (Pecan
    # Street's Dataport, most utility portals) would otherwise read a thousand times too small,
    # and pass every bound while doing so.
    power_scale: float = 1.0
    energy_scale: float = 1.0
    dropped: list[int] = field(default_factory=list, compare=False)  # rejected readings per read

    @classmethod
    def long(cls, **kw) -> TableSpec:
        return cls(layout="long", **kw)


def id_problem(name: str, value: str | None) -> str | None:
    """None when ``value`` is an acceptable home or device id, else a sentence (the same rules
    the file's id columns are checked by)."""
    if value is None or not value.strip():
        return f"no {name}"
    if len(value) > ID_MAX_CHARS:
        return f"{name} is {len(value):,} characters long (at most {ID_MAX_CHARS})"
    if not value.isprintable() or any(c in "/+#" for c in value):
        return f"{name} {value[:_SHOWN_CHARS]!r} contains a control character or one of / + #"
    return None


def parse_device_cols(text: str) -> tuple[DeviceColumn, ...]:
    """``col=device[:kind],col2=device2`` to device columns; ValueError names what is wrong."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"device column mapping {part!r} must look like column=device[:kind]")
        column, target = part.split("=", 1)
        device, _, kind = target.partition(":")
        problem = id_problem("device id", device)
        if problem:
            raise ValueError(f"{problem} in {part!r}")
        try:
            out.append(DeviceColumn(column, device, DeviceKind(kind) if kind else DeviceKind.APPLIANCE))
        except ValueError:
            raise ValueError(f"unknown kind {kind!r} in {part!r} (meter, appliance, pv, battery, ev)") from None
    if not out:
        raise ValueError("the wide layout needs --device-cols column=device[:kind],... (at least one)")
    return tuple(out)


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".txt") or path.name.endswith(".csv.gz")


def _open_text(path: Path):
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    return opener(path, "rt", newline="", encoding="utf-8", errors="replace")


_HEADER_CHARS = 1 << 16


def csv_separator(path: Path) -> str:
    """The CSV's field separator: a comma, unless the header is one field by commas and more by
    semicolons or tabs (what spreadsheets in locales with a decimal comma, and tab exports, write).
    Only the header decides: a semicolon in a cell of a comma file changes nothing."""
    import csv

    with _open_text(path) as f:
        # Bounded: a file with no line break is no spreadsheet export, and must not be read whole.
        header = f.readline(_HEADER_CHARS).lstrip("\ufeff")
    try:
        widths = {sep: len(next(csv.reader([header], delimiter=sep), [])) for sep in (",", ";", "\t")}
    except csv.Error:  # a field over csv's limit: not a header a spreadsheet wrote
        return ","
    if widths[","] > 1:
        return ","
    best = max((";", "\t"), key=widths.__getitem__)
    return best if widths[best] > 1 else ","


def _scan(path: Path, ragged: bool = False) -> pl.LazyFrame:
    """The file with ROW, the 1-based data row number; blank CSV lines are left out (they are not
    readings). ``ragged`` reads a CSV whose rows have more fields than its header, cutting them
    (:func:`_ragged_rows` finds which)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(path).with_row_index(ROW, offset=1)
    if _is_csv(path):
        # Text, not inferred types: inference from the first rows fails the whole file at the
        # first later cell of another type. Bytes that are not UTF-8 become U+FFFD (and the cell
        # then fails its own parse).
        lf = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=ragged,
                         separator=csv_separator(path))
        lf = lf.rename(_trimmed_names(lf.collect_schema().names()))
        lf = lf.with_row_index(ROW, offset=1)
        return lf.filter(~pl.all_horizontal(pl.exclude(ROW).is_null()))
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


def _trimmed_names(names: Sequence[str]) -> dict[str, str]:
    """Header names without the spaces around them: Octopus Energy's export writes
    `` Consumption (kWh), Start, End``, and ``--ts-col Start`` must find it. A name that would then
    clash with another keeps its spaces."""
    trimmed = [n.strip() for n in names]
    return {n: t for n, t in zip(names, trimmed) if t != n and t and trimmed.count(t) == 1 and t not in names}


def _ragged_rows(path: Path) -> dict[int, str]:
    """Data rows with more fields than the header, as row number -> the row's text. Only read when
    polars reports such a row: those rows' cells cannot be trusted to be in their columns."""
    import csv

    separator = csv_separator(path)
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=separator)
        width = len(next(reader, []))
        # Empty extra fields (a trailing comma) lose nothing when cut.
        return {row: separator.join(fields) for row, fields in enumerate(reader, start=1)
                if len(fields) > width and any(f.strip() for f in fields[width:])}


def _shown_names(names) -> str:
    text = ", ".join(n if n.isprintable() else repr(n) for n in sorted(names))
    return text if len(text) <= 300 else text[:300] + "\u2026"


def _require(schema: pl.Schema, columns: Sequence[str | None], path: Path) -> None:
    have = set(schema.names()) - {ROW}
    missing = [c for c in columns if c and c not in have]
    if missing:
        raise ValueError(f"{path}: missing column(s) {_shown_names(missing)}; "
                         f"the file has {_shown_names(have)}")


# ------------------------------------------------------------------ cell parsers (expressions)

def _is_text(dtype) -> bool:
    return dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum))


def _text(name: str) -> pl.Expr:
    """The cell as the text a reason quotes, clipped."""
    s = pl.col(name).cast(pl.Utf8)
    clipped = s.str.slice(0, _SHOWN_CHARS) + "\u2026"
    return pl.when(s.str.len_chars() > _SHOWN_CHARS).then(clipped).otherwise(s)


def _present(name: str, dtype) -> pl.Expr:
    if _is_text(dtype):
        return pl.col(name).cast(pl.Utf8).str.strip_chars().str.len_chars().fill_null(0) > 0
    return pl.col(name).is_not_null()


def _number(name: str, dtype, decimal_comma: bool = False) -> pl.Expr:
    """Float64, null where the cell is empty or not a number (``nan``/``inf`` parse, and are
    rejected later as not finite). ``decimal_comma``: a cell of digits, one comma and digits
    ("300,5") is that decimal; anything else with a comma stays not a number (a thousands
    separator cannot be told from a decimal comma by the cell alone)."""
    col = pl.col(name)
    if _is_text(dtype):
        text = col.cast(pl.Utf8).str.strip_chars()
        if decimal_comma:
            text = text.str.replace(r"^([+-]?[0-9]+),([0-9]+)$", "${1}.${2}")
        return text.cast(pl.Float64, strict=False)
    return col.cast(pl.Float64, strict=False)


def _epoch(seconds_or_ms: pl.Expr) -> pl.Expr:
    # As the flow reads epoch numbers: beyond 1e11 they are milliseconds.
    sec = pl.when(seconds_or_ms.abs() > 1e11).then(seconds_or_ms / 1000).otherwise(seconds_or_ms)
    us = (sec * 1e6).round().cast(pl.Int64, strict=False)
    return pl.from_epoch(us, "us").dt.replace_time_zone("UTC")


def _local(naive: pl.Expr, tz: str) -> pl.Expr:
    return (naive.cast(pl.Datetime("us"))
            .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC"))


def _timestamp(name: str, dtype, tz: str) -> tuple[pl.Expr, pl.Expr]:
    """A typed (not text) time column: (UTC time or null, "a naive local time that never
    existed in tz")."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone:
        return col.cast(pl.Datetime("us", dtype.time_zone)).dt.convert_time_zone("UTC"), pl.lit(False)
    if isinstance(dtype, (pl.Datetime, pl.Date)):
        local = _local(col, tz)
        return local, col.is_not_null() & local.is_null()
    if dtype.is_numeric():
        return _epoch(col.cast(pl.Float64)), pl.lit(False)
    return pl.lit(None, pl.Datetime("us", "UTC")), pl.lit(False)


def _with_timestamps(frame: pl.DataFrame, name: str, tz: str) -> pl.DataFrame:
    """``frame`` (one row per ROW) with ``__ts`` (UTC or null) and ``__ts_nonexistent``.

    Text is tried format by format, each only on the rows no earlier format read: a file in one
    format pays for one parse, and one odd row costs the others nothing (a chrono parse is about a
    microsecond a cell; every format on every row of a big file took seconds)."""
    dtype = frame.schema[name]
    if not _is_text(dtype):
        ts, nonexistent = _timestamp(name, dtype, tz)
        return frame.with_columns(ts.alias("__ts"), nonexistent.alias("__ts_nonexistent"))
    left = frame.select(ROW, pl.col(name).cast(pl.Utf8).str.strip_chars().alias("text")) \
        .filter(pl.col("text").str.len_chars() > 0)
    found = []
    for fmt, aware in [(f, False) for f in _NAIVE_FORMATS] + [(f, True) for f in _AWARE_FORMATS]:
        if left.is_empty():
            break
        at = pl.col("text").str.to_datetime(fmt, time_unit="us", strict=False)
        parsed = left.with_columns(at.alias("at"))
        hit = parsed.filter(pl.col("at").is_not_null())
        if aware:
            found.append(hit.select(ROW, pl.col("at").dt.convert_time_zone("UTC").alias("__ts"),
                                    pl.lit(False).alias("__ts_nonexistent")))
        else:
            local = _local(pl.col("at"), tz)
            found.append(hit.select(ROW, local.alias("__ts"), local.is_null().alias("__ts_nonexistent")))
        left = parsed.filter(pl.col("at").is_null()).select(ROW, "text")
    found.append(left.select(ROW, _epoch(pl.col("text").cast(pl.Float64, strict=False)).alias("__ts"),
                             pl.lit(False).alias("__ts_nonexistent")))
    parsed_all = pl.concat([f.cast({"__ts": pl.Datetime("us", "UTC")}) for f in found])
    return frame.join(parsed_all, on=ROW, how="left", maintain_order="left").with_columns(
        pl.col("__ts_nonexistent").fill_null(False))


def _flag(name: str, dtype) -> pl.Expr:
    """A skip flag as a boolean; null when the cell says neither yes nor no."""
    col = pl.col(name)
    if dtype == pl.Boolean:
        return col
    if _is_text(dtype):
        s = col.cast(pl.Utf8).str.strip_chars().str.to_lowercase()
        return (pl.when(s.is_in(["true", "t", "yes", "y", "1"])).then(True)
                .when(s.is_in(["false", "f", "no", "n", "0", ""]) | s.is_null()).then(False)
                .otherwise(None))
    return col.cast(pl.Boolean, strict=False)


# ------------------------------------------------------------------ layouts

def _parsed(path: Path, spec: TableSpec, ragged: dict[int, str] | None = None) -> pl.LazyFrame:
    """One row per reading the file claims, parsed as far as each cell allows, with what the
    checks need: ROW, home_id, device_id, kind, ts, power_w, energy_wh, interval_wh, and per cell
    whether it was present, its text and its column name."""
    lf = _scan(path, ragged is not None)
    if ragged:
        lf = lf.filter(~pl.col(ROW).is_in(list(ragged)))
    schema = lf.collect_schema()
    # A file separated by semicolons or tabs comes from a spreadsheet that writes "300,5".
    decimal_comma = _is_csv(path) and csv_separator(path) != ","
    home_cols = [] if spec.home_id else [spec.home_col]
    _require(schema, [spec.ts_col, *home_cols], path)
    used = {ROW, spec.ts_col, spec.home_col, spec.device_col, spec.power_col, spec.energy_col, spec.kind_col,
            spec.skip_flag_col, spec.interval_kwh_col, *(d.column for d in spec.device_cols)}
    # Read once, then parse the time column once for all the devices of a wide row.
    frame = lf.select([c for c in schema.names() if c in used]).collect()
    lf = _with_timestamps(frame, spec.ts_col, spec.tz).lazy()
    if spec.home_id:
        home = pl.lit(spec.home_id)
    elif spec.home_col:
        home = pl.col(spec.home_col).cast(pl.Utf8)
    else:
        raise ValueError("a table needs a home column or a fixed home id")
    ts = pl.col("__ts")
    common = [
        pl.col(ROW),
        home.alias("home_id"),
        ts.alias("ts"),
        pl.col("__ts_nonexistent").alias("ts_nonexistent"),
        _present(spec.ts_col, schema[spec.ts_col]).alias("ts_present"),
        _text(spec.ts_col).alias("ts_text"),
        pl.lit(False).alias("bad_flag"),
    ]

    def value_cells(column: str, prefix: str, scale: float) -> list[pl.Expr]:
        dtype = schema[column]
        value = _number(column, dtype, decimal_comma)
        return [(value if scale == 1 else value * scale).alias(prefix), _present(column, dtype).alias(f"{prefix}_present"),
                _text(column).alias(f"{prefix}_text"), pl.lit(column).alias(f"{prefix}_col")]

    no_energy = [pl.lit(None, pl.Float64).alias("energy_wh"), pl.lit(False).alias("energy_wh_present"),
                 pl.lit(None, pl.Utf8).alias("energy_wh_text"), pl.lit(None, pl.Utf8).alias("energy_wh_col")]
    no_interval = pl.lit(None, pl.Float64).alias("interval_wh")

    if spec.layout == "long":
        _require(schema, [spec.device_col, spec.power_col], path)
        energy_col = spec.energy_col if spec.energy_col in schema else None
        kind_col = spec.kind_col if spec.kind_col in schema else None
        kind = (pl.col(kind_col).cast(pl.Utf8).str.strip_chars() if kind_col is not None
                else pl.lit(None, pl.Utf8))
        return lf.select(
            *common,
            pl.col(spec.device_col).cast(pl.Utf8).alias("device_id"),
            kind.alias("kind"),
            *value_cells(spec.power_col, "power_w", spec.power_scale),
            *(value_cells(energy_col, "energy_wh", spec.energy_scale) if energy_col is not None else no_energy),
            no_interval,
        )
    if spec.layout == "wide":
        if not spec.device_cols:
            raise ValueError("the wide layout needs --device-cols column=device[:kind],...")
        _require(schema, [*(d.column for d in spec.device_cols), spec.skip_flag_col], path)
        if spec.skip_flag_col:
            flag = _flag(spec.skip_flag_col, schema[spec.skip_flag_col])
            # Rows the publisher marks as filled in are not readings at all: dropped, not rejected.
            lf = lf.filter(flag.is_null() | ~flag)
            common[-1] = flag.is_null().alias("bad_flag")
        return pl.concat([
            lf.select(*common, pl.lit(d.device_id).alias("device_id"), pl.lit(d.kind.value).alias("kind"),
                      *value_cells(d.column, "power_w", spec.power_scale), *no_energy, no_interval)
            for d in spec.device_cols
        ])
    if spec.layout == "interval":
        if not spec.interval_kwh_col:
            raise ValueError("the interval layout needs --interval-kwh COLUMN")
        _require(schema, [spec.interval_kwh_col], path)
        hours = spec.interval.total_seconds() / 3600
        if spec.interval_end:
            common[2] = (ts - pl.duration(seconds=spec.interval.total_seconds())).alias("ts")
        kwh = _number(spec.interval_kwh_col, schema[spec.interval_kwh_col], decimal_comma)
        return lf.select(
            *common,
            pl.lit("mains").alias("device_id"),
            pl.lit(DeviceKind.METER.value).alias("kind"),
            (kwh * 1000 / hours).alias("power_w"),
            _present(spec.interval_kwh_col, schema[spec.interval_kwh_col]).alias("power_w_present"),
            _text(spec.interval_kwh_col).alias("power_w_text"),
            pl.lit(spec.interval_kwh_col).alias("power_w_col"),
            *no_energy,
            (kwh * 1000).alias("interval_wh"),
        )
    raise ValueError(f"unknown layout {spec.layout!r} (long, wide or interval)")


# ------------------------------------------------------------------ checks

def _first_match(checks: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(error code, reason) of the first check whose condition holds, null when none does."""
    code, reason = pl.lit(None, pl.Utf8), pl.lit(None, pl.Utf8)
    for condition, error, sentence in reversed(checks):
        hit = condition.fill_null(False)
        code = pl.when(hit).then(pl.lit(error)).otherwise(code)
        reason = pl.when(hit).then(sentence).otherwise(reason)
    return code, reason


def _id_checks(column: str, name: str) -> list[tuple[pl.Expr, str, pl.Expr]]:
    col = pl.col(column)
    return [
        (col.is_null() | (col.str.strip_chars().str.len_chars() == 0), "bad_id",
         pl.lit(f"no {name}")),
        (col.str.len_chars() > ID_MAX_CHARS, "bad_id",
         pl.format(f"{name} is {{}} characters long (at most {ID_MAX_CHARS})", col.str.len_chars())),
        (col.str.contains(_ID_FORBIDDEN), "bad_id",
         pl.format(f"{name} '{{}}' contains a control character or one of / + #", _text(column))),
    ]


# The error codes are the flow's closed set of dead-letter codes (bad_id, bad_timestamp,
# timestamp_too_old, timestamp_in_future, not_finite, out_of_bounds, missing_field,
# invalid_payload): an import's rejections count under the same labels as the flow's, and the
# sentence beside each says exactly what was wrong.

def _parse_checks(tz: str) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """What stops a row from becoming a Reading at all."""
    ts, kind = pl.col("ts"), pl.col("kind")
    cell = lambda prefix: pl.format("{} '{}'", pl.col(f"{prefix}_col"), pl.col(f"{prefix}_text"))  # noqa: E731
    return [
        *_id_checks("home_id", "home id"),
        *_id_checks("device_id", "device id"),
        (pl.col("bad_flag"), "invalid_payload", pl.lit("the skip flag is neither true nor false")),
        (~pl.col("ts_present"), "missing_field", pl.lit("no time stamp")),
        (pl.col("ts_nonexistent"), "bad_timestamp",
         pl.format(f"time stamp '{{}}' never existed in {tz} (the clocks skipped it)", pl.col("ts_text"))),
        (ts.is_null(), "bad_timestamp",
         pl.format("time stamp '{}' is not ISO 8601 (e.g. 2024-05-01T12:00:00, optionally with +01:00 "
                   "or Z) nor epoch seconds/milliseconds", pl.col("ts_text"))),
        ((ts < _TS_MIN) | (ts > _TS_MAX), "bad_timestamp",
         pl.format("time stamp '{}' is outside the years 1-9999", pl.col("ts_text"))),
        (kind.is_not_null() & (kind != "") & ~kind.is_in(KINDS), "invalid_payload",
         pl.format(f"kind '{{}}' is not one of {', '.join(KINDS)}", kind.str.slice(0, _SHOWN_CHARS))),
        (~pl.col("power_w_present"), "missing_field",
         pl.format("no value in column {}", pl.col("power_w_col"))),
        (pl.col("power_w").is_null(), "invalid_payload", pl.format("{} is not a number", cell("power_w"))),
        (pl.col("energy_wh_present") & pl.col("energy_wh").is_null(), "invalid_payload",
         pl.format("{} is not a number", cell("energy_wh"))),
    ]


def _value_checks(received_at: datetime, settings: ValidationSettings) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """The flow's bounds (pipeline.ingest.validation) as expressions: they pick the rows and their code;
    the sentence is the flow's own, from validate(), for the few rows they pick."""
    power, energy = pl.col("power_w"), pl.col("energy_wh")
    none = pl.lit(None, pl.Utf8)
    max_energy, min_ts = settings.max_energy_wh, settings.min_ts
    return [
        (~power.is_finite() | (energy.is_not_null() & ~energy.is_finite()), "not_finite", none),
        ((power < settings.min_power_w) | (power > settings.max_power_w), "out_of_bounds", none),
        ((energy < 0) | (energy > max_energy), "out_of_bounds", none),
        (pl.col("ts") < min_ts, "timestamp_too_old", none),
        (pl.col("ts") > received_at + timedelta(seconds=settings.max_future_s), "timestamp_in_future", none),
    ]


def _with_counters(good: pl.DataFrame) -> pl.DataFrame:
    """Interval rows: the cumulative counter per home over the rows that passed (a rejected
    interval is missing from the counter, so no later delta carries its bad value)."""
    return (good.sort(["home_id", "ts"])
            .with_columns((pl.col("interval_wh").cum_sum().over("home_id")).alias("energy_wh")))


def _kind_filled(frame: pl.DataFrame) -> pl.DataFrame:
    missing = pl.col("kind").is_null() | (pl.col("kind") == "")
    return frame.with_columns(
        pl.when(missing).then(pl.lit(DeviceKind.APPLIANCE.value)).otherwise(pl.col("kind")).alias("kind"))


def _finish(good: pl.DataFrame) -> pl.DataFrame:
    return _kind_filled(good).sort(["ts", "home_id", "device_id"]).select(COLUMNS + [ROW])


def _collect(path: Path, spec: TableSpec,
             *columns: pl.Expr | list[pl.Expr]) -> tuple[pl.DataFrame, dict[int, str], int]:
    """(the parsed frame with ``columns`` added, rows with more fields than the header, data rows).

    A CSV row with too many fields makes polars refuse the whole file; it is read again with
    those rows cut, and they are set aside (their cells may sit under the wrong column)."""
    ragged: dict[int, str] | None = None
    while True:
        try:
            lf = _parsed(path, spec, ragged)
            for group in columns:
                lf = lf.with_columns(group)
            frame = lf.collect()
            rows = _scan(path, ragged is not None).select(pl.len()).collect().item()
            return frame, ragged or {}, rows
        except pl.exceptions.ComputeError as exc:
            if ragged is not None or not _is_csv(path) or "more fields" not in str(exc):
                raise
            ragged = _ragged_rows(path)


def readings_frame(path: str | Path, spec: TableSpec) -> pl.DataFrame:
    """The file as a long frame: home_id, device_id, kind, ts (UTC), power_w, energy_wh.

    Readings whose cells cannot be parsed are left out and their count appended to
    ``spec.dropped``; values are not bounded here (see :func:`check_file` for an import)."""
    path = Path(path)
    code, _ = _first_match(_parse_checks(spec.tz))
    frame, ragged, _ = _collect(path, spec, code.alias("error"))
    good = frame.filter(pl.col("error").is_null())
    spec.dropped.append(frame.height - good.height + len(ragged))
    if spec.layout == "interval":
        good = _with_counters(good)
    return _finish(good).drop(ROW)


@dataclass(frozen=True)
class CheckedFile:
    """A file split into the readings that passed (COLUMNS + ROW, in time order) and the
    rejected readings (ROW, error, reason; in the wide layout a row can have several)."""

    path: Path
    readings: pl.DataFrame
    rejected: pl.DataFrame
    rows: int  # data rows in the file (blank lines are none), rejected ones and skipped ones too
    skipped: int  # rows a skip flag drops (filled in by the dataset's publisher)
    ragged: dict[int, str] = field(default_factory=dict)  # rows with too many fields: their text


_REJECTED_SCHEMA = pl.Schema({ROW: pl.UInt32, "error": pl.Utf8, "reason": pl.Utf8})


def check_file(path: str | Path, spec: TableSpec, received_at: datetime,
               settings: ValidationSettings) -> CheckedFile:
    """Parse and check every row with polars expressions; only the rows they reject are handled
    in Python (the flow's own sentence for a value out of its bounds)."""
    path = Path(path)
    parse_code, parse_reason = _first_match(_parse_checks(spec.tz))
    value_code, _ = _first_match(_value_checks(received_at, settings))
    frame, ragged, rows = _collect(
        path, spec, [parse_code.alias("error"), parse_reason.alias("reason")],
        pl.when(pl.col("error").is_null()).then(value_code).otherwise(pl.col("error")).alias("error"))
    failed_parse = frame.filter(pl.col("reason").is_not_null())
    flagged = frame.filter(pl.col("error").is_not_null() & pl.col("reason").is_null())
    # The flow's verdict on what the expressions flagged: its sentence, and should the flow accept
    # a value the expressions would not, the flow wins.
    verdicts = [validate(r, received_at, settings) for r in frame_to_readings(_kind_filled(flagged))]
    flagged = flagged.with_columns(pl.Series("reason", verdicts, dtype=pl.Utf8))
    if spec.layout == "wide":  # the flow's sentence says power_w; a wide row has several
        flagged = flagged.with_columns(
            pl.format("{}: {}", pl.col("power_w_col"), pl.col("reason")).alias("reason"))
    accepted = flagged.filter(pl.col("reason").is_null()).with_columns(pl.lit(None, pl.Utf8).alias("error"))
    good = pl.concat([frame.filter(pl.col("error").is_null()), accepted])
    if spec.layout == "interval":
        good = _with_counters(good)
    too_wide = pl.DataFrame({ROW: list(ragged), "error": "invalid_payload",
                             "reason": "the row has more fields than the header has columns"},
                            schema=_REJECTED_SCHEMA)
    rejected = pl.concat([failed_parse.select(ROW, "error", "reason").cast(_REJECTED_SCHEMA),
                          flagged.filter(pl.col("reason").is_not_null()).select(ROW, "error", "reason")
                          .cast(_REJECTED_SCHEMA),
                          too_wide])
    return CheckedFile(path, _finish(good), rejected.sort(ROW, maintain_order=True),
                       rows, rows - len(ragged) - frame[ROW].n_unique(), ragged)


def validated_batches(checked: CheckedFile, received_at: datetime, settings: ValidationSettings,
                      on_reject: Callable[[int, str, str], None],
                      batch_rows: int = 50_000) -> Iterator[list[Reading]]:
    """The readings that passed, in time order and in batches, each through the flow's own
    validate() as it is built (a bound it has and the expressions lack still applies); what it
    rejects goes to ``on_reject(row, code, reason)``."""
    frame = checked.readings
    for offset in range(0, frame.height, batch_rows):
        part = frame.slice(offset, batch_rows)
        batch = []
        for row, reading in zip(part[ROW].to_list(), frame_to_readings(part)):
            violation = check_reading(reading, received_at, settings)
            if violation is None:
                batch.append(reading)
            else:
                on_reject(row, violation.code.value, violation.reason)
        yield batch


def rejected_counts(rejected: pl.DataFrame) -> list[tuple[str, int]]:
    """Rejected rows per error code, most first (a row counts once, under its first error)."""
    per_row = rejected.group_by(ROW, maintain_order=True).agg(pl.col("error").first())
    counts = per_row.group_by("error").len().sort(["len", "error"], descending=[True, False])
    return list(counts.iter_rows())


def dead_letters(checked: CheckedFile, rejected: pl.DataFrame, received_at: datetime) -> list[DeadLetter]:
    """One dead letter per rejected row: topic ``import:<file name>:<row>``, the row as JSON (its
    original cells), every reason of the row, the error code of its first."""
    if rejected.is_empty():
        return []
    per_row = rejected.group_by(ROW, maintain_order=True).agg(
        pl.col("error").first(), pl.col("reason").unique(maintain_order=True).str.join("; "))
    wanted = per_row.select(ROW)
    source = _scan(checked.path, bool(checked.ragged))
    payloads = dict(
        source.join(wanted.lazy(), on=ROW, how="semi")
        .select(ROW, pl.struct(pl.all().exclude(ROW)).struct.json_encode().alias("payload"))
        .collect().iter_rows())
    payloads.update(checked.ragged)
    name = checked.path.name
    return [DeadLetter.of(received_at, f"import:{name}:{row}", payloads.get(row, ""),
                          f"{name} row {row}: {reason}", step="import", error=error)
            for row, error, reason in per_row.iter_rows()]


_KIND_OF = {k.value: k for k in DeviceKind}  # a dict lookup per row, not an Enum call


def frame_to_readings(frame: pl.DataFrame) -> list[Reading]:
    return [
        Reading(h, d, ts, p, e, kind=_KIND_OF[k], source=Source.IMPORT)
        for h, d, k, ts, p, e in frame.select(COLUMNS).iter_rows()
    ]


def iter_reading_batches(path: str | Path, spec: TableSpec, batch_rows: int = 50_000,
                         frame: pl.DataFrame | None = None) -> Iterator[list[Reading]]:
    """Readings in time order, in batches (the frame is read once; Reading objects per batch)."""
    frame = readings_frame(path, spec) if frame is None else frame
    for offset in range(0, frame.height, batch_rows):
        yield frame_to_readings(frame.slice(offset, batch_rows))
