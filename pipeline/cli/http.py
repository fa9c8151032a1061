"""``shems http`` (readings over HTTP: native JSON and emoncms's input API) and ``shems apikey
add/list/revoke`` (the keys it takes)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from pipeline.cli.args import (
    add_action_parsers,
    add_broker_args,
    add_store_arg,
    existing_file,
    listen_address,
    port,
    positive_float,
)
from pipeline.cli.common import cannot_open_store, fail, one_line
from pipeline.tools.ports import listen_problem


def node_names(value: str) -> dict[str, tuple[str, ...]]:
    from pipeline.ingest.emoncms import parse_node_names

    try:
        return parse_node_names(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _open_keys(url: str):
    from sinks.apikeys import ApiKeys
    from sinks.stores import open_store

    store = open_store(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return ApiKeys(store)


def cmd_http(args: argparse.Namespace) -> int:
    from pipeline.logs import configure
    from pipeline.tools.http_ingest import BrokerPublisher, HttpIngest, HttpSettings, build_app, serve
    from sinks.base import mask_url

    configure()
    if bool(args.ssl_cert_file) != bool(args.ssl_key_file):
        return fail("HTTPS needs both --ssl-cert-file and --ssl-key-file")
    if problem := listen_problem(args.address, args.port):
        return fail(problem)
    try:
        keys = _open_keys(args.store_url)
    except Exception as exc:
        return fail(cannot_open_store(args.store_url, exc))
    client_id = args.client_id or f"shems-http-{socket.gethostname()}-{os.getpid()}"
    try:
        publisher = BrokerPublisher(args.mqtt_url, client_id, args.topic_prefix, args.publish_timeout)
    except Exception as exc:
        keys.store.close()
        return fail(f"cannot connect to the broker {mask_url(args.mqtt_url)}: {one_line(exc)}")
    settings = HttpSettings(topic_prefix=args.topic_prefix, rate_per_s=args.rate, burst=args.burst,
                            publish_timeout_s=args.publish_timeout, node_names=args.node_names)
    scheme = "https" if args.ssl_cert_file else "http"
    print(f"shems http on {scheme}://{args.address}:{args.port} (store {mask_url(args.store_url)}, "
          f"broker {mask_url(args.mqtt_url)}, topics {args.topic_prefix}shems/<home>/<device>/reading)",
          flush=True)
    try:
        serve(build_app(HttpIngest(keys, publisher, settings)), args.address, args.port,
              str(args.ssl_cert_file) if args.ssl_cert_file else None,
              str(args.ssl_key_file) if args.ssl_key_file else None)
    finally:
        publisher.close()
        keys.store.close()
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from pipeline.ingest.validation import check_id
    from pipeline.settings import ValidationSettings

    if args.action == "add":
        violation = check_id(args.home, "home", ValidationSettings())
        if violation is not None:
            return fail(violation.reason)
    try:
        keys = _open_keys(args.store_url)
    except Exception as exc:
        return fail(cannot_open_store(args.store_url, exc))
    try:
        if args.action == "add":
            known = args.home in keys.store.home_last_seen()
            record, key = keys.add(args.home, args.label or "")
            # The key alone on stdout (KEY=$(shems apikey add HOME)); what it is on stderr.
            print(key, flush=True)
            print(f"key {record.key_id} writes home {args.home}; it is shown only now", file=sys.stderr)
            if not known:
                print(f"note: no device of home {args.home} has been seen yet", file=sys.stderr)
        elif args.action == "revoke":
            if not keys.revoke(args.key_id):
                return fail(f"no active key {args.key_id!r} (see shems apikey list)")
            print(f"revoked {args.key_id}")
        else:
            for k in keys.list():
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.key_id}\t{k.home_id}\t{k.created_at:%Y-%m-%d %H:%M}\t{state}\t{k.label}")
    finally:
        keys.store.close()
    return 0


def register_http(sub) -> None:
    p = sub.add_parser("http", help="readings over HTTP: native JSON and emoncms's input API")
    p.add("--port", type=port, default=8080, env="SHEMS_HTTP_PORT", help="HTTP port")
    p.add("--address", type=listen_address, default="127.0.0.1", env="SHEMS_HTTP_ADDRESS", help="address to listen on (0.0.0.0 for all)")
    add_store_arg(p, "store holding the API keys; dead letters are written here")
    add_broker_args(p)
    p.add("--client-id", default="", help="MQTT client id (default shems-http-<host>-<pid>)")
    p.add("--rate", type=positive_float, default=2.0, help="requests per second per API key, sustained")
    p.add("--burst", type=positive_float, default=30.0, help="requests per API key at once")
    p.add("--publish-timeout", type=positive_float, default=10.0,
          help="seconds to wait for the broker's acknowledgements before answering 503")
    p.add("--node-names", type=node_names, default={},
          help="emoncms: names of positional (csv, plain bulk) inputs per node, e.g. "
               "'10=power1,power2,vrms;emontx=power1,E1' (emonhub sends values by position)")
    p.add("--ssl-cert-file", type=existing_file, help="serve HTTPS with this certificate (PEM)")
    p.add("--ssl-key-file", type=existing_file, help="private key of --ssl-cert-file (PEM)")
    p.set_defaults(handler=cmd_http)


def register_apikey(sub) -> None:
    actions = add_action_parsers(sub, "apikey", "API keys of shems http: add, list, revoke", cmd_apikey,
                                 "store holding the keys",
                                 {"add": "print a new key for a home (shown once; stored hashed)",
                                  "list": "list keys: id, home, created, state, label",
                                  "revoke": "revoke a key by its id"})
    actions["add"].add_argument("home", help="the home the key may write")
    actions["add"].add_argument("--label", default="", help="a note, e.g. the device using it")
    actions["revoke"].add_argument("key_id", help="the key's id (from shems apikey list)")
