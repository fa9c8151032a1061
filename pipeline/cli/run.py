"""``shems run``: the ingest flow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli.args import (
    Parser,
    add_broker_args,
    add_store_arg,
    device_burst,
    device_rate,
    existing_file,
    non_negative_float,
    port,
    positive_float,
    positive_int,
    qos,
    timezone_name,
)
from pipeline.cli.common import install_stop_handlers, serve_metrics
from pipeline.config import IngestConfig
from pipeline.settings import FloodSettings, WindowSettings


def add_run_args(p: Parser) -> None:
    add_broker_args(p)
    add_store_arg(p, "sqlite:///path.db (embedded default) or postgresql://user@host/db")
    p.add("--registry", type=existing_file, help="device registry TOML (vendor topics to homes/devices)")
    p.add("--idle-exit", type=positive_float, help="stop after this many seconds without a message")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics on this port")
    p.add("--recovery-dir", type=Path, help="Bytewax recovery snapshots: window state survives restarts")
    p.add("--workers", "-w", type=positive_int, default=1, help="Bytewax workers in this process")
    p.add("--process-id", "-i", type=int, help="this process's index in a Bytewax cluster")
    p.add("--addresses", "-a", help="cluster addresses host:port;host:port (one per process)")
    p.add("--share-group", default="shems",
          help="MQTT 5 shared-subscription group, used when workers x processes > 1 ('' for none)")
    p.add("--client-id-prefix", default="shems-ingest",
          help="MQTT client id prefix; keep it stable so the broker keeps the session")
    p.add("--qos", type=qos, default=1, help="subscription QoS")
    p.add("--allowed-lateness", type=non_negative_float, default=WindowSettings().allowed_lateness_s,
          help="seconds a reading may lag the newest of its device and still be aggregated")
    p.add("--device-rate", type=device_rate, default=FloodSettings().rate_per_s,
          help="readings a device may send per second of its own clock; a flood beyond it (after "
               "--device-burst) is counted, not stored")
    p.add("--device-burst", type=device_burst, default=FloodSettings().burst,
          help="readings a device may send at once before --device-rate holds it")
    p.add("--batch-rows", type=positive_int, default=20_000, help="rows per store transaction")
    p.add("--flush-interval", type=positive_float, default=0.5,
          help="longest a row waits before its batch is committed (s)")
    p.add("--tariffs", type=existing_file,
          help="tariff book TOML (deploy/tariffs.example.toml); without it, the stored one is used")
    p.add("--timezone", type=timezone_name, default="UTC",
          help="local time zone of homes the registry gives none (IANA name, e.g. Europe/London)")
    p.add("--no-insights", action="store_true",
          help="only ingest and aggregate: no forecasts, anomalies or recommendations")
    p.add("--max-buffered-messages", type=positive_int, default=100_000,
          help="received messages waiting in memory per worker; when full, the flow stops "
               "acknowledging and the broker queues the rest (backpressure)")
    p.add("--ha-discovery", action="store_true",
          help="publish each home's sensors to Home Assistant by MQTT discovery, and their states")
    p.add("--ha-prefix", type=ha_prefix, default="homeassistant",
          help="Home Assistant's discovery prefix (with --ha-discovery)")
    p.add("--mqtt-in-process", action="store_true",
          help="run each worker's MQTT client in the flow's process (by default it runs in a process "
               "of its own and feeds the worker in batches: about twice the drain rate)")
    p.add("--mqtt-process", action="store_true",
          help="the MQTT client in a process of its own per worker (the default; kept for scripts)")
    p.add("--startup-timeout", type=positive_float, default=12.0,
          help="seconds the store and the broker each get to answer at start before the flow exits "
               "with an error (once running, outages are ridden out)")


def ha_prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\x00"):
        raise argparse.ArgumentTypeError(f"a discovery prefix is topic levels without + or # and no "
                                         f"leading or trailing '/', got {value!r}")
    return value


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    from dataclasses import replace

    addresses = tuple(a for a in (args.addresses or "").split(";") if a)
    if addresses and args.process_id is None:
        raise SystemExit("shems run: --addresses needs --process-id")
    if args.mqtt_in_process and args.mqtt_process:
        raise SystemExit("shems run: --mqtt-in-process and --mqtt-process exclude each other")
    return IngestConfig(
        mqtt_url=args.mqtt_url,
        store_url=args.store_url,
        registry_path=args.registry,
        topic_prefix=args.topic_prefix,
        share_group=args.share_group or None,
        client_id_prefix=args.client_id_prefix,
        qos=args.qos,
        idle_exit_s=args.idle_exit,
        metrics_port=args.metrics_port,
        recovery_dir=args.recovery_dir,
        workers=args.workers,
        process_id=args.process_id,
        addresses=addresses,
        batch_rows=args.batch_rows,
        flush_interval_s=args.flush_interval,
        window=replace(WindowSettings(), allowed_lateness_s=args.allowed_lateness),
        flood=FloodSettings(rate_per_s=args.device_rate, burst=args.device_burst),
        tariffs_path=args.tariffs,
        timezone=args.timezone,
        insights=not args.no_insights,
        max_buffered_messages=args.max_buffered_messages,
        startup_timeout_s=args.startup_timeout,
        ha_prefix=args.ha_prefix if args.ha_discovery else None,
        mqtt_process=not args.mqtt_in_process,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from flows.ingest import run
    from pipeline.logs import configure

    configure()
    cfg = config_from_args(args)
    try:  # files that are wrong say so now, not from inside a worker
        from pipeline.energy.tariff import book_from_toml
        from pipeline.ingest.registry import Registry

        if cfg.registry_path:
            Registry.load(cfg.registry_path)
        if cfg.tariffs_path:
            book_from_toml(cfg.tariffs_path)
    except ValueError as exc:
        print(f"shems run: error: {exc}", file=sys.stderr)
        return 2
    if problem := serve_metrics(cfg.metrics_port):
        print(f"shems run: error: {problem}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        from pipeline.tools.fleet_health import FleetHealthReporter

        if not cfg.process_id:  # one reporter per cluster
            FleetHealthReporter(cfg.store_url).start()
    from flows.ingest import StartupError

    try:
        run(cfg, stop_event=install_stop_handlers())
    except StartupError as exc:
        print(f"shems run: error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run the ingest flow (MQTT -> windows -> store)")
    add_run_args(p)
    p.set_defaults(handler=cmd_run)
