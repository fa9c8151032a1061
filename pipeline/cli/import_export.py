"""``shems import`` (a CSV/Parquet file into the store) and ``shems export`` (the store to Parquet)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from pipeline import metrics
from pipeline.cli.args import add_store_arg, add_table_args, existing_file, port, table_spec
from pipeline.cli.common import cannot_open_store, check_store_reachable, fail, one_line, serve_metrics
from pipeline.config import DEFAULT_STORE_URL, sqlite_path, store_kind
from pipeline.tools.invocation import shems_command


def _printable(text: str) -> str:
    """A file's text for the terminal: control characters as escapes, never as commands."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_rejections(counts: list[tuple[str, int]], rows: int, file: Path, stream) -> None:
    rejected = sum(n for _, n in counts)
    print(f"rejected {rejected:,} of {rows:,} rows of {file.name}:", file=stream)
    width = max(len(code) for code, _ in counts)
    for code, n in counts:
        print(f"  {code:<{width}}  {n:,}", file=stream)


def cmd_import(args) -> int:
    import os
    from datetime import datetime, timezone

    import polars as pl

    from flows.batch_import import run_import
    from flows.ingest import InsightsSetup, prepare_store
    from pipeline.energy.tariff import book_from_toml
    from pipeline.ingest.registry import Registry
    from pipeline.ingest.tabular import ROW, check_file, dead_letters, rejected_counts, validated_batches
    from pipeline.settings import ValidationSettings

    # libpq waits for an unreachable host as long as TCP does (minutes); an import says so sooner.
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    # The flow's "received at" for an imported row: the file arrives now, so a reading more than
    # the flow allows ahead of the import's own clock is rejected as the flow would reject it.
    received_at = datetime.now(timezone.utc)
    settings = ValidationSettings()
    # Dead letters are keyed by their time: the file's own (not the import's) makes importing the
    # same file again add none twice.
    try:
        letters_at = datetime.fromtimestamp(args.file.stat().st_mtime, timezone.utc)
    except OSError:
        letters_at = received_at
    try:
        spec = table_spec(args)
        if args.tariffs:
            book_from_toml(args.tariffs)  # a wrong file says so before any work is done
    except ValueError as exc:
        return fail(str(exc))
    if problem := serve_metrics(args.metrics_port):
        return fail(problem)

    unreachable = check_store_reachable(args.store_url)
    if unreachable:
        print(f"shems: error: {unreachable}", file=sys.stderr)
        return 1
    try:
        checked = check_file(args.file, spec, received_at, settings)
    except ValueError as exc:
        return fail(str(exc))
    except (pl.exceptions.PolarsError, OSError) as exc:  # not a CSV/Parquet file polars can read
        return fail(f"cannot read {args.file}: {one_line(exc)}")
    if args.strict and checked.rejected.height:
        _print_rejections(rejected_counts(checked.rejected), checked.rows, args.file, sys.stderr)
        first = checked.rejected.unique(ROW, keep="first", maintain_order=True).head(10)
        for row, _, reason in first.iter_rows():
            print(f"  row {row}: {_printable(reason)}", file=sys.stderr)
        print(f"shems: error: --strict: {checked.rejected[ROW].n_unique():,} rejected row(s) in "
              f"{args.file}; nothing stored", file=sys.stderr)
        return 1
    frame = checked.readings
    try:
        book = prepare_store(args.store_url, Registry.empty(), args.tariffs)
        _write_dead_letters(args.store_url, dead_letters(checked, checked.rejected, letters_at))
    except Exception as exc:
        print(f"shems: error: {check_store_reachable(args.store_url) or one_line(exc)}", file=sys.stderr)
        return 1
    insights = None
    if not args.no_insights and frame.height:
        # History trains the same per-home models the flow runs; only the last two days of each
        # home's forecasts are kept (years of forecasts of the past would swamp the store). Per
        # home: homes of one file may end on different days.
        ends = frame.group_by("home_id").agg(pl.col("ts").max())
        insights = InsightsSetup(Registry.empty(), args.tz, book, live=False,
                                 keep_forecasts_from={h: cast(datetime, ts) - timedelta(days=2)
                                                      for h, ts in ends.iter_rows()})
    homes = sorted(frame["home_id"].unique().to_list())
    try:
        before = _made(args.store_url, homes)
    except Exception as exc:
        print(f"shems: error: {check_store_reachable(args.store_url) or one_line(exc)}", file=sys.stderr)
        return 1
    imported = 0
    progress = _Progress(frame.height, args.file.name, args.progress_every)

    def on_batch(n: int) -> None:
        nonlocal imported
        imported += n
        progress.advance(n)
        metrics.IMPORTED_READINGS.inc(n)

    late_rejects: list[tuple[int, str, str]] = []  # (row, error code, reason)
    started, ok = time.monotonic(), False
    try:
        with progress:
            meters = frozenset(frame.filter(frame["kind"] == "meter")["home_id"].unique().to_list())
            run_import(lambda: validated_batches(checked, received_at, settings,
                                                 lambda row, code, reason: late_rejects.append(
                                                     (row, code, reason))),
                       args.store_url, on_batch=on_batch, meter_home_ids=meters, insights=insights)
        # Rows the flow's validate() refused that the expressions passed (a bound only it has);
        # a row that already has its dead letter keeps that one.
        late = pl.DataFrame(late_rejects, schema={ROW: pl.UInt32, "error": pl.Utf8, "reason": pl.Utf8},
                            orient="row")
        late = late.join(checked.rejected.select(ROW).unique(), on=ROW, how="anti").select(ROW, "error", "reason")
        _write_dead_letters(args.store_url, dead_letters(checked, late, letters_at))
        ok = True
    except Exception as exc:
        print(f"shems: error: import of {args.file} stopped after {imported:,} readings: {one_line(exc)}",
              file=sys.stderr)
        return 1
    finally:
        if args.pushgateway:
            _push_summary(args.pushgateway, imported, time.monotonic() - started, ok)
    rejected = pl.concat([checked.rejected, late])
    print(f"imported {imported:,} readings from {args.file}"
          + (f" ({checked.skipped:,} rows marked as filled in by {spec.skip_flag_col} skipped)"
             if checked.skipped else ""))
    if rejected.height:
        _print_rejections(rejected_counts(rejected), checked.rows, args.file, sys.stdout)
        print(f"  (each in the dead_letter table, topic import:{args.file.name}:<row>)")
    try:
        after = _made(args.store_url, homes)
    except Exception as exc:  # the readings are stored; only the summary is missing
        print(f"shems: warning: cannot count what the import made: {one_line(exc)}", file=sys.stderr)
        return 0
    _print_summary(args, homes, frame, before, after)
    return 0


# What the summary counts, per table, for the imported homes. Forecasts and anomalies are keyed
# upserts, so after minus before is what this import added (a re-import adds nothing).
_MADE = {"readings": "readings", "forecasts": "forecasts", "forecast scores": "forecast_scores",
         "anomalies": "anomalies", "recommendations": "recommendations"}


def _made(url: str, homes: list[str]) -> dict[str, int]:
    from ui.db import Database

    db = Database(url, migrate=True)
    try:
        names = {f"h{i}": h for i, h in enumerate(homes)}
        among = ", ".join(f":{k}" for k in names)
        return {t: int(db.rows(f"SELECT count(*) FROM {t} WHERE home_id IN ({among})", names)[0][0])
                for t in _MADE.values()}
    finally:
        db.close()


def _print_summary(args, homes: list[str], frame, before: dict[str, int], after: dict[str, int]) -> None:
    from sinks.base import mask_url

    print(f"store: {mask_url(args.store_url)}")
    n = len(homes)
    print(f"homes: {n} ({', '.join(_printable(h) for h in homes[:5])}{', …' if n > 5 else ''})")
    for label, table in _MADE.items():
        made = after.get(table, 0) - before.get(table, 0)
        print(f"  {label + ':':<18} {made:>12,} new ({after.get(table, 0):,} in the store)")
    if args.no_insights:
        print("  (--no-insights: no forecasts, anomalies or recommendations were made)")
    url = args.store_url if args.store_url == DEFAULT_STORE_URL else mask_url(args.store_url)
    print(f"see them: {shems_command()} ui --store-url '{url}'")


class _Progress:
    """A progress bar on a terminal; elsewhere (piped, CI, a log file) a log line every
    ``every_s`` seconds, so a long import is never silent."""

    def __init__(self, total: int, name: str, every_s: float) -> None:
        self.total, self.name, self.every_s = total, name, every_s
        self.done = 0
        self.tty = sys.stdout.isatty()
        self.bar: Any = None  # rich's Progress on a terminal
        self.started = self.last = time.monotonic()

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.progress import Progress

            bar = Progress()
            bar.__enter__()
            self.task = bar.add_task(f"importing {self.name}", total=self.total)
            self.bar = bar
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            share = self.done / self.total if self.total else 1.0
            print(f"importing {_printable(self.name)}: {self.done:,} of {self.total:,} readings "
                  f"({share:.0%}, {rate:,.0f}/s)", flush=True)


def _push_summary(gateway: str, readings: int, seconds: float, ok: bool) -> None:
    """Push the import's result; a gateway that is down is a warning, not a failed import (the
    readings are stored; the missing push shows as a stale last-success time)."""
    try:
        metrics.push_import_summary(gateway, readings, seconds, ok)
    except Exception as exc:  # urllib's errors: refused, timed out, HTTP error
        print(f"shems: warning: could not push to the Pushgateway {gateway}: {one_line(exc)}", file=sys.stderr)


def _write_dead_letters(url: str, letters: list, chunk: int = 10_000) -> None:
    from sinks.base import Batch
    from sinks.stores import open_store

    if not letters:
        return
    store = open_store(url)
    try:
        for offset in range(0, len(letters), chunk):
            store.write(Batch(dead_letters=letters[offset:offset + chunk]))
    finally:
        store.close()


def cmd_export(args) -> int:
    import os

    from sinks.base import mask_url
    from sinks.parquet import export_parquet
    from sinks.stores import open_store

    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    if store_kind(args.store_url) == "sqlite" and not Path(sqlite_path(args.store_url)).is_file():
        return fail(f"no SQLite store at {sqlite_path(args.store_url)}")
    try:
        store = open_store(args.store_url)
    except Exception as exc:  # the driver's error: refused, timed out, wrong password
        return fail(cannot_open_store(args.store_url, exc), 1)
    started = last = time.monotonic()

    def progress(table: str, rows: int) -> None:  # on stderr: stdout is the list of files written
        nonlocal last
        if (now := time.monotonic()) - last >= 10:
            last = now
            print(f"exporting {table}: {rows:,} rows so far ({now - started:,.0f} s)", file=sys.stderr, flush=True)

    try:
        paths = export_parquet(store, args.out, on_batch=progress)
    except OSError as exc:
        return fail(f"cannot write to {args.out}: {one_line(exc)}")
    except Exception as exc:  # the store's error mid-export, e.g. a table missing or the server gone
        print(f"shems: error: export from {mask_url(args.store_url)} failed: {one_line(exc)}",
              file=sys.stderr)
        return 1
    finally:
        store.close()
    for p in paths:
        print(p)
    return 0


def register_import(sub) -> None:
    p = sub.add_parser(
        "import", help="load history from CSV/Parquet into the store",
        description="Every row is checked as the flow checks a message (parse, ids, kind, finite "
                    "values within the bounds, not ahead of the import's own clock). Rejected rows "
                    "go to the dead_letter table (topic import:<file name>:<row>, the row, the "
                    "reason), the rest is imported, counts per reason are printed, and the exit "
                    "status is 0. With --strict nothing is stored if any row is rejected (exit 1).")
    add_table_args(p)
    p.add("--strict", action="store_true",
          help="check the whole file first and store nothing (exit 1) if any row is rejected")
    add_store_arg(p, "target store")
    p.add("--no-insights", action="store_true",
          help="only store readings and aggregates: no forecasts, anomalies or recommendations")
    p.add("--tariffs", type=existing_file,
          help="tariff book TOML, stored and used to price recommendations (else the stored one)")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics while importing")
    p.add("--progress-every", type=float, default=10.0, metavar="SECONDS",
          help="when the output is not a terminal, a progress line this often (default 10)")
    p.add("--pushgateway", default=None,
          help="push the import's result to this Prometheus Pushgateway (host:port or URL)")
    p.set_defaults(handler=cmd_import)


def register_export(sub) -> None:
    p = sub.add_parser("export", help="write readings and aggregates to Parquet files")
    add_store_arg(p, "source store")
    p.add("--out", type=Path, default=Path("export"), help="output folder")
    p.set_defaults(handler=cmd_export)
