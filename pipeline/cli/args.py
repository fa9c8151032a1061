"""Argument types and shared options of the ``shems`` command line, in one place.

Every flag can also be given as an environment variable ``SHEMS_<FLAG>`` (``--mqtt-url`` is
``SHEMS_MQTT_URL``); a flag on the command line wins. Each type raises ArgumentTypeError with a
sentence a user can act on, which argparse prints as one line and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import os
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.config import (
    DEFAULT_MQTT_URL,
    DEFAULT_STORE_URL,
    MQTT_TLS_PARAMS,
    check_store_url,
    parse_mqtt_url,
    store_kind,
    with_password,
    with_query,
)
from pipeline.settings import MAX_DEVICE_BURST, MAX_DEVICE_RATE_PER_S

if TYPE_CHECKING:
    from pipeline.ingest.tabular import TableSpec

Number = TypeVar("Number", int, float)


def mqtt_url(value: str) -> str:
    try:
        parse_mqtt_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def topic_prefix(value: str) -> str:
    """Empty, or topic levels ending in '/': the flow subscribes to the prefix followed by
    filters such as ``+/events/rpc``, where a prefix without its '/' would glue a wildcard to
    text, an invalid filter the broker client refuses (and the flow then never connects)."""
    if value and (not value.endswith("/") or any(c in value for c in "+#\x00")):
        raise argparse.ArgumentTypeError(f"a topic prefix is topic levels ending in '/' without + or # "
                                         f"(e.g. site1/), got {value!r}")
    return value


def store_url(value: str) -> str:
    try:
        return check_store_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def postgres_store_url(value: str) -> str:
    url = store_url(value)
    if store_kind(url) != "postgres":
        raise argparse.ArgumentTypeError(f"this needs a PostgreSQL store (postgresql://user@host/db), got {url!r}")
    return url


def _number(value: str, parse: Callable[[str], Number], noun: str, bound: str,
            within: Callable[[Number], bool]) -> Number:
    try:
        n = parse(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {value!r}") from None
    if not within(n):
        raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {value!r}")
    return n


def positive_float(value: str) -> float:
    return _number(value, float, "a number", "> 0", lambda f: f > 0)


def non_negative_float(value: str) -> float:
    return _number(value, float, "a number", ">= 0", lambda f: not f < 0)  # as before, NaN passes


def latitude(value: str) -> float:
    return _number(value, float, "a latitude in degrees", "between -90 and 90", lambda f: -90 <= f <= 90)


def longitude(value: str) -> float:
    return _number(value, float, "a longitude in degrees (east positive)", "between -180 and 180",
                   lambda f: -180 <= f <= 180)


def positive_int(value: str) -> int:
    return _number(value, int, "a whole number", "> 0", lambda i: i > 0)


def device_rate(value: str) -> float:
    """Readings a second of a device's clock (FloodSettings' bounds)."""
    return _number(value, float, "readings a second", f"above 0 and at most {MAX_DEVICE_RATE_PER_S:.0f}",
                   lambda f: 0 < f <= MAX_DEVICE_RATE_PER_S)


def device_burst(value: str) -> int:
    return _number(value, int, "a whole number", f"between 1 and {MAX_DEVICE_BURST}",
                   lambda i: 1 <= i <= MAX_DEVICE_BURST)


def port(value: str) -> int:
    i = positive_int(value)
    if i > 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value!r}")
    return i


def listen_address(value: str) -> str:
    """A host name or IP address this machine can listen on. Empty is refused: servers read it as
    every interface, which is what 0.0.0.0 says out loud."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an address to listen on is a host name or IP address "
                                         "(127.0.0.1 for this machine, 0.0.0.0 for all), got an empty one")
    try:
        socket.getaddrinfo(value, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot listen on {value!r}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    return value


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
        if store_kind(url) != "postgres":
            raise ValueError("--store-password-file needs a postgresql:// store URL")
        ns.store_url = with_password(url, read_secret(password_file))


class HelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default, except where there is none to state (None, off)
    and where it is a secret (a value read from a ``SHEMS_<FLAG>_FILE``); URLs have passwords
    masked, since an environment variable may have supplied them."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "%(default)" in text or getattr(action, "secret", False)
                or default is None or default is False or default == "" or default is argparse.SUPPRESS):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        if "://" in shown:
            from pipeline.logs import mask_secrets

            shown = mask_secrets(shown)
        return f"{text} (default: {shown.replace('%', '%%')})"


def did_you_mean(word: str, candidates: list[str]) -> str:
    """`` (did you mean --x?)`` for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """The ``shems`` parser: defaults in ``--help``, a typo'd flag answered by the subcommand's
    own usage and the closest flag, other argument errors in one line."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # SHEMS_* values this parser's options refuse, said when it parses (not when it is
        # built: another subcommand's bad variable must not stop this one).
        self._env_problems: list[str] = []

    def _is_leaf(self) -> bool:
        return not any(isinstance(a, argparse._SubParsersAction) for a in self._actions)

    def _options(self) -> list[str]:
        return [flag for a in self._actions for flag in a.option_strings if flag.startswith("--")]

    def error(self, message: str):
        # The usage helps with a wrong or missing word; for a bad value the sentence says it all.
        if message.startswith(("unrecognized arguments", "the following arguments are required")) \
                or getattr(self, "_wrong_subcommand", False):
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _check_value(self, action, value):
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            choices = [str(c) for c in action.choices or ()]
            self._wrong_subcommand = isinstance(action, argparse._SubParsersAction)
            raise argparse.ArgumentError(action, f"{exc.message}{did_you_mean(str(value), choices)}") from None

    def add(self, *flags: str, env: str | None = None, default=None, help: str = "", **kw):
        """add_argument with the SHEMS_* environment variable as the default; ``SHEMS_<FLAG>_FILE``
        names a file holding the value instead (how Docker and Kubernetes mount secrets)."""
        long = next(f for f in flags if f.startswith("--"))
        env = env or "SHEMS_" + long[2:].upper().replace("-", "_")
        secret = False
        if env in os.environ and kw.get("action") not in ("store_true", "store_false"):
            default = os.environ[env]
            if callable(kw.get("type")):
                kw["type"] = _naming_the_variable(kw["type"], env, default)
            if kw.get("choices") is not None and default not in kw["choices"]:
                # argparse checks a flag's value against its choices, never a default's.
                self._env_problems.append(f"{env} is one of {', '.join(map(str, kw['choices']))}, got {default!r}"
                                          f"{did_you_mean(default, [str(c) for c in kw['choices']])}")
        elif kw.get("action") == "store_true" and env in os.environ:
            word = os.environ[env].strip().lower()
            if word not in _TRUE + _FALSE:
                # Read as "off" before: SHEMS_NO_INSIGHTS=maybe silently left insights on.
                self._env_problems.append(f"{env} is one of {'/'.join(_TRUE)} (on) or {'/'.join(_FALSE[:-1])} "
                                          f"or empty (off), got {os.environ[env]!r}")
            default = word in _TRUE
        elif f"{env}_FILE" in os.environ and kw.get("action") is None:
            try:
                default = read_secret(os.environ[f"{env}_FILE"])
            except ValueError as exc:
                self.error(f"{env}_FILE: {exc}")
            secret = True
        action = self.add_argument(*flags, default=default, help=f"{help} [env {env}]", **kw)
        action.secret = secret  # type: ignore[attr-defined]  # never shown by --help
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
        asks_help = {"-h", "--help"} & set(sys.argv[1:] if args is None else args)
        if self._env_problems and not asks_help:
            self.error(self._env_problems[0])
        namespace, rest = super().parse_known_args(args, namespace)
        if rest and self._is_leaf() and self.prog != "shems":
            # Refused here, by the subcommand that was given them, not by `shems` at the top:
            # the usage shown is then the one of the subcommand the user was typing.
            hints = "".join(did_you_mean(word.split("=", 1)[0], self._options())
                            for word in rest if word.startswith("-"))
            self.error(f"unrecognized arguments: {' '.join(rest)}{hints}")
        try:
            resolve_secret_files(namespace)
        except ValueError as exc:
            self.error(str(exc))
        return namespace, rest


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _naming_the_variable(convert: Callable[[str], Any], env: str, from_env: str) -> Callable[[str], Any]:
    """``convert``, whose refusal of the environment's value names the variable: the user gave no
    flag, so "argument --port: expected a whole number" alone would send them looking for one."""
    def checked(value: str) -> Any:
        try:
            return convert(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            if value != from_env:
                raise
            raise argparse.ArgumentTypeError(f"{exc} (from the environment variable {env})") from None

    checked.__name__ = getattr(convert, "__name__", "value")
    return checked


def add_broker_args(p: Parser) -> None:
    p.add("--mqtt-url", type=mqtt_url, default=DEFAULT_MQTT_URL,
          help="broker, mqtt://[user:pass@]host[:port] or mqtts:// for TLS")
    p.add("--topic-prefix", type=topic_prefix, default="",
          help="prepended to every topic, ending in '/' (multi-tenant brokers, tests)")


def add_store_arg(p: Parser, help: str = "sqlite:///path.db or postgresql://user@host/db") -> None:
    p.add("--store-url", type=store_url, default=DEFAULT_STORE_URL, help=help)


def add_action_parsers(sub, command: str, help: str, handler: Callable[[argparse.Namespace], int],
                       store_help: str, actions: dict[str, str]) -> dict[str, Parser]:
    """A command whose next word is an action on records in the store (``shems user add``,
    ``shems apikey revoke``): ``actions`` maps each to its help; the parser of each, with the
    store option added, for the action's own arguments."""
    p = sub.add_parser(command, help=help)
    p.set_defaults(handler=handler)
    subparsers = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    parsers = {name: subparsers.add_parser(name, help=action_help) for name, action_help in actions.items()}
    for parser in parsers.values():
        add_store_arg(parser, store_help)
    return parsers


def add_poll_args(p: Parser, interval_s: float) -> None:
    """The options of a command that polls the store: every ``--interval`` seconds, or ``--once``."""
    p.add("--interval", type=positive_float, default=interval_s,
          help=f"seconds between polls (default {interval_s:g})")
    p.add("--once", action="store_true", help="one poll, print what it did, exit (for cron)")


POWER_UNITS = {"W": 1.0, "kW": 1000.0}
ENERGY_UNITS = {"Wh": 1.0, "kWh": 1000.0}


def add_table_args(p) -> None:
    p.add_argument("file", type=existing_file, help="CSV or Parquet file")
    p.add("--layout", choices=["long", "wide", "interval"], default="long",
          help="long: one reading per row; wide: one column per device (REFIT, UK-DALE); "
               "interval: energy per interval in kWh (SGSC)")
    p.add("--ts-col", default=None, help="time column (default: ts, or timestamp for wide files)")
    p.add("--home-col", default="home_id", help="home column")
    p.add("--home-id", default=None, help="a fixed home id when the file has no home column")
    p.add("--device-col", default="device_id", help="device column (long layout)")
    p.add("--power-col", default="power_w", help="power column (long layout), in --power-unit")
    p.add("--energy-col", default="energy_wh", help="cumulative energy column (long layout), in --energy-unit")
    p.add("--power-unit", choices=list(POWER_UNITS), default="W",
          help="unit of the power columns (long and wide layouts)")
    p.add("--energy-unit", choices=list(ENERGY_UNITS), default="Wh", help="unit of the energy column")
    p.add("--device-cols", default=None,
          help="wide layout: column=device[:kind],... e.g. aggregate_w=mains:meter,kettle_w=kettle")
    p.add("--skip-flag-col", default=None, help="boolean column marking filled-in rows to drop")
    p.add("--interval-kwh", default=None, help="interval layout: the kWh-per-interval column")
    p.add("--interval-minutes", type=positive_float, default=30.0, help="interval length")
    p.add("--interval-end", action="store_true", help="interval time stamps mark the END of the interval")
    p.add("--tz", default="UTC", help="time zone of naive time stamps, e.g. Europe/London")


def table_spec(args) -> TableSpec:
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
        power_scale=POWER_UNITS[args.power_unit],
        energy_scale=ENERGY_UNITS[args.energy_unit],
    )


def horizon_list(value: str) -> tuple[float, ...]:
    try:
        hours = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hours separated by commas, e.g. 1,6,12,24; got {value!r}") from None
    if not hours or any(not 0 < h <= 24 for h in hours):
        raise argparse.ArgumentTypeError(f"horizons must be hours in (0, 24], got {value!r}")
    return hours


def _plan_option(parser_name: str) -> Callable[[str], Any]:
    """An argparse type from a parser of pipeline.energy.plan_input (imported when first used,
    so `shems --help` does not load the planner)."""
    def parse(value: str):
        from pipeline.energy import plan_input

        try:
            return getattr(plan_input, parser_name)(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


load_option = _plan_option("parse_load_option")
battery_option = _plan_option("parse_battery_option")
ev_option = _plan_option("parse_ev_option")


def day(value: str):
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def slot_minutes(value: str) -> int:
    if value not in ("15", "30", "60"):
        raise argparse.ArgumentTypeError(f"slot must be 15, 30 or 60 minutes, got {value!r}")
    return int(value)
