"""The ``shems`` command line.

Every flag can also be given as an environment variable ``SHEMS_<FLAG>`` (``--mqtt-url`` is
``SHEMS_MQTT_URL``); a flag on the command line wins. Bad arguments print what is wrong and exit
with status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from pipeline.config import MQTT_TLS_PARAMS, IngestConfig, parse_mqtt_url, with_password, with_query
from pipeline.settings import WindowSettings

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_STORE_URL = "sqlite:///.shems/shems.db"


# ----- argument types: each raises ArgumentTypeError with a sentence a user can act on -----

def mqtt_url(value: str) -> str:
    try:
        parse_mqtt_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def store_url(value: str) -> str:
    if value.startswith("sqlite://"):
        if not value.startswith("sqlite:///") or len(value) <= len("sqlite:///"):
            raise argparse.ArgumentTypeError(
                "SQLite URL needs a path: sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise argparse.ArgumentTypeError(
        f"unsupported store URL scheme in {value.split('://')[0]!r}: use sqlite:///path.db or postgresql://..."
    )


def positive_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return f


def non_negative_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if f < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return f


def positive_int(value: str) -> int:
    try:
        i = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if i <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {value!r}")
    return i


def port(value: str) -> int:
    i = positive_int(value)
    if i > 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value!r}")
    return i


def existing_file(value: str) -> Path:
    p = Path(value)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return p


def timezone_name(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r} (e.g. Europe/London)") from None
    return value


def qos(value: str) -> int:
    if value not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"QoS must be 0, 1 or 2, got {value!r}")
    return int(value)


def read_secret(path: str | Path) -> str:
    """A secret mounted as a file (Docker/Kubernetes secrets): its text without the final newline."""
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    if not value:
        raise ValueError(f"the secret file {path} is empty")
    return value


def resolve_secret_files(ns: argparse.Namespace) -> None:
    """Fold the TLS and password-file flags into the URLs they belong to, so everything downstream
    (the flow's workers, the viewer's child process, the publishers) needs only the URL. The
    password is read here, never passed on a command line."""
    url = getattr(ns, "mqtt_url", None)
    tls_files = {key: str(getattr(ns, f"mqtt_{key}")) for key in MQTT_TLS_PARAMS
                 if getattr(ns, f"mqtt_{key}", None)}
    password_file = getattr(ns, "mqtt_password_file", None)
    if (tls_files or password_file) and not url:
        raise ValueError("--mqtt-ca-file/--mqtt-cert-file/--mqtt-key-file/--mqtt-password-file need --mqtt-url")
    if url:
        if tls_files:
            if not url.startswith(("mqtts://", "ssl://")):
                raise ValueError("--mqtt-ca-file/--mqtt-cert-file/--mqtt-key-file need an mqtts:// URL")
            url = with_query(url, **tls_files)
        if password_file:
            url = with_password(url, read_secret(password_file))
        parse_mqtt_url(url)
        ns.mqtt_url = url
    password_file = getattr(ns, "store_password_file", None)
    if password_file:
        url = getattr(ns, "store_url", None) or ""
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("--store-password-file needs a postgresql:// store URL")
        ns.store_url = with_password(url, read_secret(password_file))


class _Parser(argparse.ArgumentParser):
    def add(self, *flags: str, env: str | None = None, default=None, help: str = "", **kw):
        """add_argument with the SHEMS_* environment variable as the default; ``SHEMS_<FLAG>_FILE``
        names a file holding the value instead (how Docker and Kubernetes mount secrets)."""
        long = next(f for f in flags if f.startswith("--"))
        env = env or "SHEMS_" + long[2:].upper().replace("-", "_")
        if env in os.environ and kw.get("action") not in ("store_true", "store_false"):
            default = os.environ[env]
        elif kw.get("action") == "store_true" and env in os.environ:
            default = os.environ[env].lower() in ("1", "true", "yes", "on")
        elif f"{env}_FILE" in os.environ and kw.get("action") is None:
            try:
                default = read_secret(os.environ[f"{env}_FILE"])
            except ValueError as exc:
                self.error(f"{env}_FILE: {exc}")
        action = self.add_argument(*flags, default=default, help=f"{help} [env {env}]", **kw)
        # Every command that reaches a broker or a store takes the same TLS and secret options,
        # without each command's registrar having to remember them.
        if long == "--mqtt-url":
            self.add("--mqtt-ca-file", type=existing_file,
                     help="CA certificate(s) the broker's certificate must chain to (mqtts://; "
                          "default: the system's CAs); the host name is always checked")
            self.add("--mqtt-cert-file", type=existing_file, help="client certificate (PEM), with --mqtt-key-file")
            self.add("--mqtt-key-file", type=existing_file, help="private key of --mqtt-cert-file (PEM)")
            self.add("--mqtt-password-file", type=existing_file,
                     help="file holding the broker password (the URL names the user)")
        elif long == "--store-url":
            self.add("--store-password-file", type=existing_file,
                     help="file holding the PostgreSQL password (the URL names the user; TLS via "
                          "?sslmode=verify-full&sslrootcert=ca.crt)")
        return action

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        try:
            resolve_secret_files(namespace)
        except ValueError as exc:
            self.error(str(exc))
        return namespace, rest


def _add_broker_args(p: _Parser) -> None:
    p.add("--mqtt-url", type=mqtt_url, default=DEFAULT_MQTT_URL,
          help="broker, mqtt://[user:pass@]host[:port] or mqtts:// for TLS")
    p.add("--topic-prefix", default="", help="prepended to every topic (multi-tenant brokers, tests)")


def _add_run_args(p: _Parser) -> None:
    _add_broker_args(p)
    p.add("--store-url", type=store_url, default=DEFAULT_STORE_URL,
          help="sqlite:///path.db (embedded default) or postgresql://user@host/db")
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
    p.add("--batch-rows", type=positive_int, default=5000, help="rows per store transaction")
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
    p.add("--startup-timeout", type=positive_float, default=12.0,
          help="seconds the store and the broker each get to answer at start before the flow exits "
               "with an error (once running, outages are ridden out)")


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    from dataclasses import replace

    addresses = tuple(a for a in (args.addresses or "").split(";") if a)
    if addresses and args.process_id is None:
        raise SystemExit("shems run: --addresses needs --process-id")
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
        tariffs_path=args.tariffs,
        timezone=args.timezone,
        insights=not args.no_insights,
        max_buffered_messages=args.max_buffered_messages,
        startup_timeout_s=args.startup_timeout,
    )


def install_stop_handlers() -> threading.Event:
    """SIGINT/SIGTERM ask the flow to stop cleanly: drain, commit, keep the broker session."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():  # a second Ctrl-C means: now
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_run(args: argparse.Namespace) -> int:
    from flows.ingest import run
    from pipeline.logs import configure

    configure()
    cfg = config_from_args(args)
    try:  # files that are wrong say so now, not from inside a worker
        from pipeline.ingest.registry import Registry
        from pipeline.energy.tariff import TariffBook

        if cfg.registry_path:
            Registry.load(cfg.registry_path)
        if cfg.tariffs_path:
            TariffBook.from_toml(cfg.tariffs_path)
    except ValueError as exc:
        print(f"shems run: error: {exc}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        from prometheus_client import start_http_server

        from pipeline.tools.fleet_health import FleetHealthReporter

        start_http_server(cfg.metrics_port)
        if not cfg.process_id:  # one reporter per cluster
            FleetHealthReporter(cfg.store_url).start()
    from flows.ingest import StartupError

    try:
        run(cfg, stop_event=install_stop_handlers())
    except StartupError as exc:
        print(f"shems run: error: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run}


def build_parser() -> _Parser:
    parser = _Parser(prog="shems", description="Smart-home energy management pipeline")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the ingest flow (MQTT -> windows -> store)")
    _add_run_args(run)
    for register in _REGISTRARS:
        register(sub)
    return parser


# Other modules add their subcommands here (import, replay, simulate, demo, bench, export).
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline import commands  # noqa: F401  (registers the remaining subcommands)

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        print(f"shems {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The innermost cause of an error, in one line (libraries such as Bytewax wrap it)."""
    seen = set()
    while id(exc) not in seen and (exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


if __name__ == "__main__":
    # Run the importable module's main, so subcommands registered against pipeline.cli are seen.
    from pipeline import cli as _cli

    sys.exit(_cli.main())
