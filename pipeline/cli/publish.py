"""``shems replay`` (a file to MQTT), ``shems simulate`` (synthetic homes) and ``shems demo``."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from pipeline import metrics
from pipeline.cli.args import (
    add_broker_args,
    add_table_args,
    battery_option,
    non_negative_float,
    port,
    positive_float,
    positive_int,
    qos,
    store_url,
    table_spec,
)
from pipeline.cli.common import fail, serve_metrics
from pipeline.config import DEFAULT_MQTT_URL


def cmd_replay(args) -> int:
    from pipeline.tools.file_replay import replay
    from pipeline.tools.publisher import Publisher

    try:
        spec = table_spec(args)
    except ValueError as exc:
        return fail(str(exc))
    if problem := serve_metrics(args.metrics_port):
        return fail(problem)
    publisher = Publisher(args.mqtt_url, qos=args.qos)
    if args.metrics_port:
        REGISTRY.register(metrics.PublisherCollector(publisher, "replay"))
    try:
        sent = replay(args.file, spec, publisher, args.speed, args.topic_prefix,
                      shift_to_now=args.shift_to_now, limit=args.limit, max_rate=args.max_rate)
    except ValueError as exc:
        return fail(str(exc))
    finally:
        publisher.close()
    print(f"published {sent:,} readings")
    return 0


def cmd_simulate(args) -> int:
    from dataclasses import replace

    from rich.live import Live

    from pipeline.cli.common import install_stop_handlers
    from pipeline.energy.device_control import BatteryModel
    from pipeline.tools.publisher import Publisher
    from pipeline.tools.simulator import make_homes, run_simulation

    fleet = make_homes(args.homes, args.seed)
    if args.battery is not None or args.ev_plugged:
        b = args.battery  # each home its own battery, so its state of charge is its own
        fleet = [replace(home, ev_plugged=args.ev_plugged, battery=None if b is None else BatteryModel(
            b.capacity_kwh, b.charge_w, b.discharge_w, b.efficiency, b.soc_kwh)) for home in fleet]
    stop = install_stop_handlers()
    if problem := serve_metrics(args.metrics_port):
        return fail(problem)
    publisher = Publisher(args.mqtt_url, qos=args.qos)
    if args.metrics_port:
        REGISTRY.register(metrics.PublisherCollector(publisher, "simulate"))
    started = time.monotonic()
    with Live(refresh_per_second=2) as live:
        sent = run_simulation(
            publisher, args.homes, args.interval, args.duration, args.topic_prefix, args.seed, stop,
            on_tick=lambda n: live.update(
                f"{args.homes} homes: {n:,} readings published, {n / max(1e-9, time.monotonic() - started):,.0f}/s"),
            fleet=fleet,
        )
    publisher.close()
    print(f"published {sent:,} readings from {args.homes} simulated homes")
    return 0


def cmd_demo(args) -> int:
    from pipeline.tools.demo import run_demo
    from pipeline.tools.ports import listen_problem

    # Asked before the history import: the flow would only find out once started, in its log.
    if args.metrics_port and (problem := listen_problem("0.0.0.0", args.metrics_port)):
        return fail(problem)
    return run_demo(args.mqtt_url, args.store_url, args.homes, args.duration, args.interval,
                    args.metrics_port, args.ui_port or None)


def register_replay(sub) -> None:
    p = sub.add_parser("replay", help="publish a file to MQTT in time order")
    add_table_args(p)
    add_broker_args(p)
    p.add("--speed", type=non_negative_float, default=1.0, help="times real time; 0 = as fast as possible")
    p.add("--shift-to-now", action="store_true", help="move time stamps so the replay happens now")
    p.add("--limit", type=positive_int, default=None, help="publish at most this many readings")
    p.add("--max-rate", type=positive_float, default=None,
          help="publish at most this many readings per second (a broker drops what a slow "
               "subscriber cannot take beyond its queue limit)")
    p.add("--qos", type=qos, default=1, help="publish QoS")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics (published, acknowledged)")
    p.set_defaults(handler=cmd_replay)


def register_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="publish realistic synthetic homes")
    add_broker_args(p)
    p.add("--homes", type=positive_int, default=10, help="number of homes")
    p.add("--interval", type=positive_float, default=5.0, help="seconds between readings of a device")
    p.add("--duration", type=positive_float, default=None, help="stop after this many seconds")
    p.add("--seed", type=int, default=1, help="random seed (homes are deterministic per seed)")
    p.add("--qos", type=qos, default=1, help="publish QoS")
    p.add("--metrics-port", type=port, help="serve Prometheus metrics (published, acknowledged)")
    p.add("--battery", type=battery_option, default=None,
          help="give every home a battery that obeys setpoints (shems execute): "
               "capacity_kwh=10,power_kw=5,efficiency=0.9,soc=0.5")
    p.add("--ev-plugged", action="store_true",
          help="every home has an EV plugged in, charging at 7.2 kW or its charger's limit")
    p.set_defaults(handler=cmd_simulate)


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="everything on embedded defaults, until Ctrl-C or --duration")
    p.add("--mqtt-url", default=DEFAULT_MQTT_URL, help="broker; a private one is started if unreachable")
    p.add("--store-url", type=store_url, default="sqlite:///.shems/demo.db", help="store")
    p.add("--homes", type=positive_int, default=5, help="simulated homes beside the real sample")
    p.add("--interval", type=positive_float, default=2.0, help="seconds between simulated readings")
    p.add("--duration", type=positive_float, default=None, help="stop after this many seconds")
    p.add("--metrics-port", type=port, default=9108, help="Prometheus metrics of the flow")
    p.add("--ui-port", type=int, default=8501, help="the viewer's port (0: no viewer)")
    p.set_defaults(handler=cmd_demo)
