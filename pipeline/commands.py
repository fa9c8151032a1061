"""Subcommands beyond `run`: import, replay, simulate, demo, export. Each registers itself."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import metrics
from pipeline.cli import (COMMANDS, DEFAULT_MQTT_URL, DEFAULT_STORE_URL, _REGISTRARS, _add_broker_args,
                          existing_file, non_negative_float, port, positive_float, positive_int, qos,
                          store_url, timezone_name)

if TYPE_CHECKING:
    from pipeline.ingest.tabular import TableSpec


def _add_table_args(p) -> None:
    p.add_argument("file", type=existing_file, help="CSV or Parquet file")
    p.add("--layout", choices=["long", "wide", "interval"], default="long",
          help="long: one reading per row; wide: one column per device (REFIT, UK-DALE); "
               "interval: energy per interval in kWh (SGSC)")
    p.add("--ts-col", default=None, help="time column (default: ts, or timestamp for wide files)")
    p.add("--home-col", default="home_id", help="home column")
    p.add("--home-id", default=None, help="a fixed home id when the file has no home column")
    p.add("--device-col", default="device_id", help="device column (long layout)")
    p.add("--power-col", default="power_w", help="power column in W (long layout)")
    p.add("--energy-col", default="energy_wh", help="cumulative energy column in Wh (long layout)")
    p.add("--device-cols", default=None,
          help="wide layout: column=device[:kind],... e.g. aggregate_w=mains:meter,kettle_w=kettle")
    p.add("--skip-flag-col", default=None, help="boolean column marking filled-in rows to drop")
    p.add("--interval-kwh", default=None, help="interval layout: the kWh-per-interval column")
    p.add("--interval-minutes", type=positive_float, default=30.0, help="interval length")
    p.add("--interval-end", action="store_true", help="interval time stamps mark the END of the interval")
    p.add("--tz", default="UTC", help="time zone of naive time stamps, e.g. Europe/London")


def table_spec(args) -> "TableSpec":
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from pipeline.ingest.tabular import TableSpec, id_problem, parse_device_cols

    try:
        ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {args.tz!r}") from None
    if args.home_id is not None and (problem := id_problem("--home-id", args.home_id)):
        raise ValueError(problem)
    return TableSpec(
        layout=args.layout,
        ts_col=args.ts_col or ("timestamp" if args.layout == "wide" else "ts"),
        home_col=None if args.home_id else args.home_col,
        home_id=args.home_id,
        device_col=args.device_col,
        power_col=args.power_col,
        energy_col=args.energy_col,
        device_cols=parse_device_cols(args.device_cols or "") if args.layout == "wide" else (),
        skip_flag_col=args.skip_flag_col,
        interval_kwh_col=args.interval_kwh,
        interval=timedelta(minutes=args.interval_minutes),
        interval_end=args.interval_end,
        tz=args.tz,
    )


def _fail(message: str) -> int:
    print(f"shems: error: {message}", file=sys.stderr)
    return 2


def _one_line(exc: BaseException) -> str:
    """An exception as one line: the innermost cause (Bytewax wraps an operator's error in its
    own), first line only, with any password in a URL masked."""
    from sinks.base import mask_url

    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return " ".join(mask_url(word) if "://" in word else word for word in text.split(" "))


def _check_store_reachable(url: str) -> str | None:
    """None when the store answers, else why not (one line). Before any work: an import of a big
    file must not read it all to then find the store down."""
    from sinks.base import mask_url, open_store

    try:
        open_store(url).close()
    except Exception as exc:  # the driver's error: refused, timed out, wrong password, bad path
        return f"cannot open the store {mask_url(url)}: {_one_line(exc)}"
    return None


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
    from rich.progress import Progress

    from flows.batch_import import run_import
    from flows.ingest import InsightsSetup, prepare_store
    from pipeline.ingest.registry import Registry
    from pipeline.settings import ValidationSettings
    from pipeline.ingest.tabular import ROW, check_file, dead_letters, rejected_counts, validated_batches
    from pipeline.energy.tariff import TariffBook

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
            TariffBook.from_toml(args.tariffs)  # a wrong file says so before any work is done
    except ValueError as exc:
        return _fail(str(exc))
    if args.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port)
        except OSError as exc:  # the port is taken
            return _fail(f"cannot serve metrics on port {args.metrics_port}: {_one_line(exc)}")

    unreachable = _check_store_reachable(args.store_url)
    if unreachable:
        print(f"shems: error: {unreachable}", file=sys.stderr)
        return 1
    try:
        checked = check_file(args.file, spec, received_at, settings)
    except ValueError as exc:
        return _fail(str(exc))
    except (pl.exceptions.PolarsError, OSError) as exc:  # not a CSV/Parquet file polars can read
        return _fail(f"cannot read {args.file}: {_one_line(exc)}")
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
        print(f"shems: error: {_check_store_reachable(args.store_url) or _one_line(exc)}", file=sys.stderr)
        return 1
    insights = None
    if not args.no_insights and frame.height:
        # History trains the same per-home models the flow runs; only the last two days of its
        # hourly forecasts are kept (years of forecasts of the past would swamp the store).
        insights = InsightsSetup(Registry.empty(), args.tz, book, live=False,
                                 keep_forecasts_from=frame["ts"].max() - timedelta(days=2))
    imported = 0

    def on_batch(n: int) -> None:
        nonlocal imported
        imported += n
        bar.update(task, advance=n)
        metrics.IMPORTED_READINGS.inc(n)

    late_rejects: list[tuple[int, str]] = []
    started, ok = time.monotonic(), False
    try:
        with Progress() as bar:
            task = bar.add_task(f"importing {args.file.name}", total=frame.height)
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
        print(f"shems: error: import of {args.file} stopped after {imported:,} readings: {_one_line(exc)}",
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
    return 0


def _push_summary(gateway: str, readings: int, seconds: float, ok: bool) -> None:
    """Push the import's result; a gateway that is down is a warning, not a failed import (the
    readings are stored; the missing push shows as a stale last-success time)."""
    try:
        metrics.push_import_summary(gateway, readings, seconds, ok)
    except Exception as exc:  # urllib's errors: refused, timed out, HTTP error
        print(f"shems: warning: could not push to the Pushgateway {gateway}: {_one_line(exc)}", file=sys.stderr)


def _write_dead_letters(url: str, letters: list, chunk: int = 10_000) -> None:
    from sinks.base import Batch, open_store

    if not letters:
        return
    store = open_store(url)
    try:
        for offset in range(0, len(letters), chunk):
            store.write(Batch(dead_letters=letters[offset:offset + chunk]))
    finally:
        store.close()


def cmd_replay(args) -> int:
    from pipeline.tools.publisher import Publisher
    from pipeline.tools.file_replay import replay

    try:
        spec = table_spec(args)
    except ValueError as exc:
        return _fail(str(exc))
    publisher = Publisher(args.mqtt_url, qos=args.qos)
    metrics.serve_publisher_metrics(args.metrics_port, publisher, "replay")
    try:
        sent = replay(args.file, spec, publisher, args.speed, args.topic_prefix,
                      shift_to_now=args.shift_to_now, limit=args.limit, max_rate=args.max_rate)
    except ValueError as exc:
        return _fail(str(exc))
    finally:
        publisher.close()
    print(f"published {sent:,} readings")
    return 0


def cmd_simulate(args) -> int:
    from rich.live import Live

    from pipeline.cli import install_stop_handlers
    from pipeline.tools.publisher import Publisher
    from pipeline.tools.simulator import run_simulation

    stop = install_stop_handlers()
    publisher = Publisher(args.mqtt_url, qos=args.qos)
    metrics.serve_publisher_metrics(args.metrics_port, publisher, "simulate")
    started = time.monotonic()
    with Live(refresh_per_second=2) as live:
        sent = run_simulation(
            publisher, args.homes, args.interval, args.duration, args.topic_prefix, args.seed, stop,
            on_tick=lambda n: live.update(
                f"{args.homes} homes: {n:,} readings published, {n / max(1e-9, time.monotonic() - started):,.0f}/s"),
        )
    publisher.close()
    print(f"published {sent:,} readings from {args.homes} simulated homes")
    return 0


def cmd_demo(args) -> int:
    from pipeline.tools.demo import run_demo

    return run_demo(args.mqtt_url, args.store_url, args.homes, args.duration, args.interval,
                    args.metrics_port, args.ui_port or None)


def cmd_export(args) -> int:
    import os

    from sinks.base import mask_url, open_store
    from sinks.parquet import export_parquet

    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    if args.store_url.startswith("sqlite:///") and not Path(args.store_url[len("sqlite:///"):]).is_file():
        return _fail(f"no SQLite store at {args.store_url[len('sqlite:///'):]}")
    try:
        store = open_store(args.store_url)
    except Exception as exc:  # the driver's error: refused, timed out, wrong password
        print(f"shems: error: cannot open the store {mask_url(args.store_url)}: {_one_line(exc)}",
              file=sys.stderr)
        return 1
    try:
        paths = export_parquet(store, args.out)
    except OSError as exc:
        return _fail(f"cannot write to {args.out}: {_one_line(exc)}")
    except Exception as exc:  # the store's error mid-export, e.g. a table missing or the server gone
        print(f"shems: error: export from {mask_url(args.store_url)} failed: {_one_line(exc)}",
              file=sys.stderr)
        return 1
    finally:
        store.close()
    for p in paths:
        print(p)
    return 0


def horizon_list(value: str) -> tuple[float, ...]:
    try:
        hours = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hours separated by commas, e.g. 1,6,12,24; got {value!r}") from None
    if not hours or any(not 0 < h <= 24 for h in hours):
        raise argparse.ArgumentTypeError(f"horizons must be hours in (0, 24], got {value!r}")
    return hours


def anomaly_rows(rows) -> list[dict]:
    """The anomaly evaluation's rows as the JSON line's ``anomaly`` list."""
    return [{"kind": r.kind, "precision": r.precision, "recall": r.recall, "injected": r.injected,
             "found": r.found, "detected": r.detected, "false_positives": r.false_positives}
            for r in rows]


def cmd_evaluate(args) -> int:
    import time

    import polars as pl
    from rich.console import Console
    from rich.progress import Progress

    from pipeline.evaluation.forecast import evaluate_forecasts
    from pipeline.evaluation.report import evaluation_json, print_evaluation
    from pipeline.insights.forecast import ForecastSettings
    from pipeline.evaluation.stuck_runs import StuckRule
    from pipeline.ingest.tabular import readings_frame

    console = Console(stderr=args.json)  # keep stdout's last line for the JSON
    try:
        spec = table_spec(args)
        settings = ForecastSettings(timezone=args.home_tz or args.tz)
        frame = readings_frame(args.file, spec)
    except ValueError as exc:
        return _fail(str(exc))
    if args.homes:
        wanted = [h.strip() for h in args.homes.split(",") if h.strip()]
        missing = sorted(set(wanted) - set(frame["home_id"].unique().to_list()))
        if missing:
            return _fail(f"no readings for home(s) {', '.join(missing)} in {args.file}")
        frame = frame.filter(pl.col("home_id").is_in(wanted))
    if frame.is_empty():
        return _fail(f"no readings in {args.file}")
    started = time.monotonic()
    with Progress(console=console) as bar:
        task = bar.add_task(f"replaying {args.file.name}", total=frame.height)
        result = evaluate_forecasts(
            frame, settings, horizons_h=args.horizons,
            stuck=StuckRule(min_minutes=args.stuck_minutes, min_samples=args.stuck_samples),
            jobs=args.jobs, on_rows=lambda n: bar.update(task, advance=n))
    print_evaluation(result, console, time.monotonic() - started)
    anomaly = []
    if not args.no_anomalies:
        from pipeline.evaluation.anomaly import run_evaluation
        from pipeline.evaluation.report import print_anomaly_evaluation

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("injecting faults and detecting", total=None)
            try:
                faults = run_evaluation(
                    frame, seed=args.seed, tz=args.home_tz or args.tz, workers=args.jobs,
                    progress=lambda text: bar.update(task, description=f"anomalies: {text}"))
            except ValueError as exc:
                return _fail(str(exc))
        print_anomaly_evaluation(faults, console)
        anomaly = anomaly_rows(faults.rows)
    if args.json:
        print(evaluation_json(result, anomaly))
    return 0


def _register(sub) -> None:
    p = sub.add_parser(
        "import", help="load history from CSV/Parquet into the store",
        description="Every row is checked as the flow checks a message (parse, ids, kind, finite "
                    "values within the bounds, not ahead of the import's own clock). Rejected rows "
                    "go to the dead_letter table (topic import:<file name>:<row>, the row, the "
                    "reason), the rest is imported, counts per reason are printed, and the exit "
                    "status is 0. With --strict nothing is stored if any row is rejected (exit 1).")
    _add_table_args(p)
    p.add("--strict", action="store_true",
          help="check the whole file first and store nothing (exit 1) if any row is rejected")
    p.add("--store-url", type=store_url, default=DEFAULT_STORE_URL, help="target store")
    p.add("--no-insights", action="store_true",
          help="only store readings and aggregates: no forecasts, anomalies or recommendations")
    p.add("--tariffs", type=existing_file,
          help="tariff book TOML, stored and used to price recommendations (else the stored one)")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics while importing")
    p.add("--pushgateway", default=None,
          help="push the import's result to this Prometheus Pushgateway (host:port or URL)")
    COMMANDS["import"] = cmd_import

    p = sub.add_parser("replay", help="publish a file to MQTT in time order")
    _add_table_args(p)
    _add_broker_args(p)
    p.add("--speed", type=non_negative_float, default=1.0, help="times real time; 0 = as fast as possible")
    p.add("--shift-to-now", action="store_true", help="move time stamps so the replay happens now")
    p.add("--limit", type=positive_int, default=None, help="publish at most this many readings")
    p.add("--max-rate", type=positive_float, default=None,
          help="publish at most this many readings per second (a broker drops what a slow "
               "subscriber cannot take beyond its queue limit)")
    p.add("--qos", type=qos, default=1, help="publish QoS")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics (published, acknowledged)")
    COMMANDS["replay"] = cmd_replay

    p = sub.add_parser("simulate", help="publish realistic synthetic homes")
    _add_broker_args(p)
    p.add("--homes", type=positive_int, default=10, help="number of homes")
    p.add("--interval", type=positive_float, default=5.0, help="seconds between readings of a device")
    p.add("--duration", type=positive_float, default=None, help="stop after this many seconds")
    p.add("--seed", type=int, default=1, help="random seed (homes are deterministic per seed)")
    p.add("--qos", type=qos, default=1, help="publish QoS")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics (published, acknowledged)")
    COMMANDS["simulate"] = cmd_simulate

    p = sub.add_parser("demo", help="everything on embedded defaults, until Ctrl-C or --duration")
    p.add("--mqtt-url", default=DEFAULT_MQTT_URL, help="broker; a private one is started if unreachable")
    p.add("--store-url", type=store_url, default="sqlite:///.shems/demo.db", help="store")
    p.add("--homes", type=positive_int, default=5, help="simulated homes beside the real sample")
    p.add("--interval", type=positive_float, default=2.0, help="seconds between simulated readings")
    p.add("--duration", type=positive_float, default=None, help="stop after this many seconds")
    p.add("--metrics-port", type=port, default=9108, help="Prometheus metrics of the flow")
    p.add("--ui-port", type=int, default=8501, help="the viewer's port (0: no viewer)")
    COMMANDS["demo"] = cmd_demo

    p = sub.add_parser("evaluate", help="score the online forecasts on a dataset replayed through the flow's operators")
    _add_table_args(p)
    p.add("--home-tz", default=None,
          help="the homes' own time zone for calendar features, when --tz only says how the file's "
               "time stamps are written (default: --tz)")
    p.add("--horizons", type=horizon_list, default=(1.0, 6.0, 12.0, 24.0),
          help="hours from issue to the end of the target slot to report")
    p.add("--homes", default=None, help="only these homes (comma-separated ids)")
    p.add("--stuck-minutes", type=positive_float, default=60.0,
          help="a run of one exact value this long (and --stuck-samples readings) is a stuck "
               "logger: slots it touches are not scored")
    p.add("--stuck-samples", type=positive_int, default=24, help="see --stuck-minutes")
    p.add("--jobs", type=positive_int, default=1, help="homes evaluated at once (processes)")
    p.add("--seed", type=int, default=0, help="seed of the injected faults (anomaly evaluation)")
    p.add("--no-anomalies", action="store_true", help="score the forecasts only")
    p.add("--json", action="store_true", help="end with one JSON line")
    COMMANDS["evaluate"] = cmd_evaluate

    p = sub.add_parser("export", help="write readings and aggregates to Parquet files")
    p.add("--store-url", type=store_url, default=DEFAULT_STORE_URL, help="source store")
    p.add("--out", type=Path, default=Path("export"), help="output folder")
    COMMANDS["export"] = cmd_export


_REGISTRARS.append(_register)


def cmd_bench(args) -> int:
    from rich.console import Console

    from pipeline.tools.bench import print_result, run_bench

    console = Console(stderr=args.json)  # keep stdout's last line for the JSON
    result = run_bench(args.devices, args.seconds, args.rate, args.burst, args.qos, args.mqtt_url,
                       args.store_url, args.workers, args.processes, args.naive_burst, console,
                       insights=not args.no_insights)
    print_result(result, console, args.json)
    return 0


def _register_bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    kinds = bench.add_subparsers(dest="bench", required=True, parser_class=type(bench))
    p = kinds.add_parser("ingest", help="publish -> committed rate and latency against real broker and store")
    p.add("--devices", type=positive_int, default=10_000, help="fleet size")
    p.add("--seconds", type=positive_float, default=20.0, help="length of the paced latency phase")
    p.add("--rate", type=positive_float, default=5000.0, help="readings/s in the paced phase")
    p.add("--burst", type=positive_int, default=None, help="messages in the throughput burst (default max(50000, 5 x devices))")
    p.add("--naive-burst", type=positive_int, default=None, help="messages for the naive baseline (default min(burst, 20000))")
    p.add("--qos", type=qos, default=1, help="QoS of every measurement")
    p.add("--mqtt-url", type=mqtt_url_type, default=None, help="broker (default: a private Mosquitto without queue limits)")
    p.add("--store-url", default=None, help="PostgreSQL store (default: a fresh database, dropped after)")
    p.add("--workers", "-w", type=positive_int, default=1, help="Bytewax workers per flow process")
    p.add("--processes", "-p", type=positive_int, default=1, help="flow processes (a Bytewax cluster)")
    p.add("--no-insights", action="store_true",
          help="run the flow without forecasts, anomalies and recommendations (the ingest core alone)")
    p.add("--json", action="store_true", help="end with one JSON line")
    COMMANDS["bench"] = cmd_bench


from pipeline.cli import mqtt_url as mqtt_url_type  # noqa: E402

_REGISTRARS.append(_register_bench)


def cmd_plan(args) -> int:
    import json
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from pipeline.energy.optimize import PlanProblem, base_load_from_forecasts, optimize
    from pipeline.energy.plan_input import horizon, load_specs_from_toml, resolve_loads
    from pipeline.energy.tariff import price_frame

    try:
        book, home = _plan_prices(args)
        tz = args.tz or book.timezone(home)
        specs = list(args.load or []) + (load_specs_from_toml(args.loads) if args.loads else [])
        if not specs:
            raise ValueError("no loads to plan: give --load name,kwh,hours,earliest,deadline or --loads FILE")
        day = args.date or datetime.now(ZoneInfo(tz)).date()
        slot = timedelta(minutes=args.slot_minutes)
        loads = resolve_loads(specs, day, tz)
        start, n = horizon(loads, slot)
        prices = price_frame(book, home, start, start + slot * n, slot)
        if args.base_load_w is not None or not args.store_url:
            base, base_note = (args.base_load_w or 0.0,) * n, f"flat {args.base_load_w or 0:g} W"
        else:
            if not args.home:
                raise ValueError("--store-url reads a home's forecast: give --home too")
            base = base_load_from_forecasts(_stored_forecasts(args.store_url, args.home), start, slot, n)
            base_note = f"the newest forecast for {args.home}"
        problem = PlanProblem(start, slot, tuple(prices["import_price"].to_list()), tuple(base), loads,
                              tuple(prices["export_price"].to_list()), args.power_limit_w, book.currency, tz)
        plan = optimize(problem)
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(_plan_json(plan)))
    else:
        _print_plan(plan, problem, tz, base_note, book.tariff_at(home, start).describe())
    return 0


def _plan_prices(args):
    from datetime import datetime, timezone

    from pipeline.energy.tariff import Tariff, TariffBook, TariffKind, load_price_file

    if args.tariffs and args.prices:
        raise ValueError("give --tariffs or --prices, not both")
    if args.tariffs:
        return TariffBook.from_toml(args.tariffs), args.home or "*"
    if not args.prices:
        raise ValueError("no prices: give --tariffs FILE (a tariff book) or --prices FILE (ts, import_price[, export_price])")
    series = load_price_file(args.prices)
    tariff = Tariff(datetime.fromtimestamp(series.first_s, timezone.utc), TariffKind.DYNAMIC, args.currency,
                    args.tz or "UTC", args.prices.name, None, args.export_price, prices=series)
    return TariffBook(args.currency, (tariff,)), "*"


def _stored_forecasts(url: str, home: str):
    from sinks.base import mask_url, open_store

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ValueError(f"no SQLite store at {url[len('sqlite:///'):]}")
    store = open_store(url)
    try:
        try:
            rows = store.forecasts(home_id=home)
        except Exception as exc:  # the store's driver error, e.g. a missing table
            raise ValueError(f"cannot read forecasts from {mask_url(url)}: {exc}") from None
    finally:
        store.close()
    return rows


def _plan_json(plan) -> dict:
    return {
        "currency": plan.currency, "cost": plan.cost, "baseline_cost": plan.baseline_cost,
        "saving": plan.saving, "peak_w": plan.peak_w, "baseline_peak_w": plan.baseline_peak_w,
        "power_limit_w": plan.power_limit_w, "baseline_within_limit": plan.baseline_within_limit,
        "solver": plan.solver,
        "loads": [{"name": s.name, "start": s.start.isoformat(), "end": s.end.isoformat(),
                   "slots": [t.isoformat() for t in s.slots], "energy_kwh": s.energy_kwh, "cost": s.cost,
                   "earliest_start": s.earliest_start.isoformat(), "baseline_cost": s.baseline_cost}
                  for s in plan.loads],
    }


def _print_plan(plan, problem, tz: str, base_note: str, tariff_note: str) -> None:
    from zoneinfo import ZoneInfo

    from rich.console import Console
    from rich.table import Table

    zone = ZoneInfo(tz)
    cur = plan.currency

    def at(ts) -> str:
        return ts.astimezone(zone).strftime("%a %H:%M")

    windows = {load.name: f"{at(load.earliest)}–{at(load.deadline)}" for load in problem.loads}
    table = Table(title=f"Schedule ({tz}, {problem.slot.total_seconds() / 60:g}-minute slots, {cur})")
    table.add_column("load", no_wrap=True)
    table.add_column("kWh", justify="right")
    table.add_column("window", no_wrap=True)
    for column in ("start", "end", "cost", "at earliest"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in plan.loads:
        table.add_row(s.name, f"{s.energy_kwh:.2f}", windows[s.name], at(s.start), at(s.end),
                      f"{s.cost:.2f}", f"{s.baseline_cost:.2f}")
    console = Console()
    console.print(table)
    console.print(f"prices: {tariff_note}; base load: {base_note}"
                  + (f"; limit {plan.power_limit_w:,.0f} W (peak {plan.peak_w:,.0f} W)"
                     if plan.power_limit_w else ""))
    share = f" ({plan.saving / plan.baseline_cost:.0%})" if plan.baseline_cost > 0 else ""
    console.print(f"cost with this plan {plan.cost:.2f} {cur}; every load at its earliest start "
                  f"{plan.baseline_cost:.2f} {cur}"
                  + ("" if plan.baseline_within_limit else " (over the limit)")
                  + f"; [bold]saving {plan.saving:.2f} {cur}{share}[/bold]")


def _load_option(value: str):
    from pipeline.energy.plan_input import parse_load_option

    try:
        return parse_load_option(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day(value: str):
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _slot_minutes(value: str) -> int:
    if value not in ("15", "30", "60"):
        raise argparse.ArgumentTypeError(f"slot must be 15, 30 or 60 minutes, got {value!r}")
    return int(value)


def _register_plan(sub) -> None:
    p = sub.add_parser("plan", help="cheapest start times for deferrable loads (washing, dishwasher, EV)")
    p.add("--tariffs", type=existing_file, help="tariff book TOML (see deploy/tariffs.example.toml)")
    p.add("--home", default=None, help="the home whose tariff (and forecast, with --store-url) to use")
    p.add("--prices", type=existing_file, help="price file instead of a book: ts (UTC), import_price[, export_price]")
    p.add("--currency", default="", help="currency of --prices")
    p.add("--export-price", type=non_negative_float, default=0.0,
          help="export price per kWh for --prices files without an export_price column")
    # Repeatable, so no environment default (one variable cannot hold a list of loads).
    p.add_argument("--load", action="append", type=_load_option,
                   help="name,kwh,hours,earliest,deadline (repeatable), e.g. dishwasher,1.2,2,19:00,07:00")
    p.add("--loads", type=existing_file, help="loads TOML ([[load]] name, energy_kwh|power_w, hours, earliest, deadline)")
    p.add("--date", type=_day, default=None, help="the day HH:MM times refer to (default: today)")
    p.add("--tz", type=timezone_name, default=None, help="time zone of HH:MM times (default: the tariff's)")
    p.add("--slot-minutes", type=_slot_minutes, default=15, help="slot length: 15, 30 or 60")
    p.add("--base-load-w", type=non_negative_float, default=None,
          help="flat base load in W (default 0, or the newest forecast with --store-url)")
    p.add("--store-url", type=store_url, default=None, help="store to read --home's newest forecast from")
    p.add("--power-limit-w", type=positive_float, default=None, help="household power limit in W")
    p.add("--json", action="store_true", help="print the plan as JSON")
    COMMANDS["plan"] = cmd_plan


_REGISTRARS.append(_register_plan)

from ui import commands as _ui_commands  # noqa: E402,F401  (registers `shems ui` and `shems user`)
