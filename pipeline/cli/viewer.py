"""``shems ui`` (the viewer) and ``shems user add/remove/passwd/list`` (its accounts)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

import ui
from pipeline.cli.args import (
    add_action_parsers,
    add_store_arg,
    existing_file,
    listen_address,
    mqtt_url,
    port,
    topic_prefix,
)
from pipeline.cli.common import cannot_open_store, fail
from pipeline.config import DEFAULT_MQTT_URL
from pipeline.tools.ports import listen_problem

APP = Path(ui.__file__).parent / "app.py"


def cmd_ui(args: argparse.Namespace) -> int:
    """Create or upgrade the schema, then become the Streamlit server (exec: signals reach it)."""
    from sinks.base import mask_url
    from ui.db import Database

    try:
        Database(args.store_url, migrate=True).close()
    except Exception as exc:  # unreachable database, bad path: say so instead of a traceback
        return fail(cannot_open_store(args.store_url, exc))
    if bool(args.ssl_cert_file) != bool(args.ssl_key_file):
        return fail("HTTPS needs both --ssl-cert-file and --ssl-key-file")
    # Asked here, before exec: Streamlit names a taken port in its own words and an address of
    # another machine with a traceback, and the metrics port is only tried inside the page.
    for address, port_number in ((args.address, args.port), ("0.0.0.0", args.metrics_port)):
        if port_number and (problem := listen_problem(address, port_number)):
            return fail(problem)
    env = dict(os.environ, SHEMS_STORE_URL=args.store_url, SHEMS_MQTT_URL=args.mqtt_url,
               SHEMS_TOPIC_PREFIX=args.topic_prefix, SHEMS_UI_METRICS_PORT=str(args.metrics_port or 0))
    argv = [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(args.port), "--server.address", args.address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
            "--theme.base", "light",
            # Stated, not left to defaults or a stray .streamlit/config.toml: uploads and other
            # POSTs need the XSRF cookie's token, and the WebSocket only takes this origin.
            "--server.enableXsrfProtection", "true", "--server.enableCORS", "true"]
    scheme = "http"
    if args.ssl_cert_file:
        scheme = "https"
        argv += ["--server.sslCertFile", str(args.ssl_cert_file),
                 "--server.sslKeyFile", str(args.ssl_key_file)]
    print(f"shems viewer on {scheme}://{args.address}:{args.port} (store {mask_url(args.store_url)})",
          flush=True)
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _accounts(url: str):
    from ui.accounts import Accounts
    from ui.db import Database

    return Accounts(Database(url, migrate=True))


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in a container
        return "cli"


def _access_problem(args: argparse.Namespace, known_homes: set[str] | None) -> str | None:
    """Why ``user add`` must refuse this role and these homes, or None: a homeowner sees only the
    homes listed, so a typo there would sign them in to an empty viewer; an operator or admin sees
    the whole fleet, so a home given to one means a misunderstanding. ``known_homes`` None: the
    store is not open yet, so only role and homes are checked against each other."""
    homes = sorted(set(args.home or ()))
    if args.role != "homeowner" and homes:
        return (f"an {args.role} sees every home: --home is for homeowners only "
                f"(got {', '.join(homes)})")
    if args.role == "homeowner" and not homes:
        return "a homeowner needs at least one home (--home)"
    if known_homes is None:
        return None
    unknown = [h for h in homes if h not in known_homes]
    if unknown:
        listed = ", ".join(sorted(known_homes)[:10]) or "none yet: import or run the flow first"
        return (f"no home {', '.join(map(repr, unknown))} in the store "
                f"(homes there: {listed})")
    return None


def cmd_user(args: argparse.Namespace) -> int:
    from ui.auth import Role

    if args.action == "add" and (problem := _access_problem(args, None)) is not None:
        return fail(problem)
    try:
        accounts = _accounts(args.store_url)
    except Exception as exc:
        return fail(cannot_open_store(args.store_url, exc))
    try:
        if args.action == "add":
            known = {h for (h,) in accounts.db.rows("SELECT DISTINCT home_id FROM devices")}
            if (problem := _access_problem(args, known)) is not None:
                return fail(problem)
            accounts.add_user(args.name, _read_password(args), Role(args.role), args.home or (),
                              by=_who())
            print(f"added {args.name} ({args.role}{': ' + ', '.join(args.home) if args.home else ''})")
        elif args.action == "remove":
            if not accounts.remove_user(args.name, by=_who()):
                return fail(f"no user {args.name!r}", 1)
            print(f"removed {args.name}")
        elif args.action == "passwd":
            if not accounts.set_password(args.name, _read_password(args), by=_who()):
                return fail(f"no user {args.name!r}", 1)
            print(f"password of {args.name} changed; their sessions ended")
        else:
            for user in accounts.users():
                print(f"{user.username}\t{user.role.value}\t{','.join(user.homes)}")
    except ValueError as exc:
        return fail(str(exc))
    finally:
        accounts.db.close()
    return 0


def register_ui(sub) -> None:
    p = sub.add_parser("ui", help="the viewer (Streamlit): sign-in, live, history, control, fleet")
    add_store_arg(p, "store to show (schema created if empty)")
    p.add("--port", type=port, default=8501, help="HTTP port")
    p.add("--address", type=listen_address, default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    p.add("--mqtt-url", type=mqtt_url, default=DEFAULT_MQTT_URL, help="broker for device commands")
    p.add("--topic-prefix", type=topic_prefix, default="", help="prepended to command topics (as for `shems run`)")
    p.add("--ssl-cert-file", type=existing_file,
          help="serve HTTPS with this certificate (PEM, chain included); with --ssl-key-file")
    p.add("--ssl-key-file", type=existing_file, help="private key of --ssl-cert-file (PEM)")
    p.add("--metrics-port", type=port, env="SHEMS_UI_METRICS_PORT",
          help="serve the viewer's Prometheus metrics on this port")
    p.set_defaults(handler=cmd_ui)


def register_user(sub) -> None:
    actions = add_action_parsers(sub, "user", "viewer accounts: add, remove, passwd, list", cmd_user,
                                 "store holding the users",
                                 {"add": "add a user", "remove": "remove a user and end their sessions",
                                  "passwd": "set a user's password (ends their sessions)",
                                  "list": "list users, roles and homes"})
    for name in ("add", "remove", "passwd"):
        actions[name].add_argument("name", help="user name")
    for name in ("add", "passwd"):
        actions[name].add("--password-stdin", action="store_true", help="read the password from standard input")
    actions["add"].add("--role", choices=["homeowner", "operator", "admin"], default="homeowner",
                       help="homeowner: own homes only; operator: the fleet; admin: users too")
    actions["add"].add_argument("--home", action="append", help="a home of a homeowner (repeat for several)")
