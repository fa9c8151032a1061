"""``shems bench``: benchmarks against a real broker and store."""

from __future__ import annotations

from pipeline.cli.args import Parser, mqtt_url, positive_float, positive_int, postgres_store_url, qos, store_url


def cmd_bench(args) -> int:
    from rich.console import Console

    from pipeline.cli.common import check_store_reachable, fail
    from pipeline.tools.bench import print_result, run_bench

    # Before the broker's baseline is measured: a store that is not there says so first.
    if args.store_url and (problem := check_store_reachable(args.store_url)):
        return fail(problem)
    console = Console(stderr=args.json)  # keep stdout's last line for the JSON
    result = run_bench(args.devices, args.seconds, args.rate, args.burst, args.qos, args.mqtt_url,
                       args.store_url, args.workers, args.processes, args.naive_burst, console,
                       insights=not args.no_insights,
                       flow_args=("--mqtt-in-process",) if args.mqtt_in_process else ())
    print_result(result, console, args.json)
    return 0


def cmd_drain(args) -> int:
    from rich.console import Console

    from pipeline.cli.common import check_store_reachable, fail
    from pipeline.tools.bench_drain import print_drain, run_drain

    # Before a backlog of --readings is published and drained: a store that is not there says so.
    if args.store_url and (problem := check_store_reachable(args.store_url)):
        return fail(problem)
    console = Console(stderr=True)  # progress on stderr; stdout keeps the JSON line
    result = run_drain(args.readings, args.devices, not args.no_insights, args.processes, args.workers,
                       args.store_url, console, mqtt_process=not args.mqtt_in_process,
                       recovery=bool(args.recovery))
    print_drain(result, console, args.json)
    return 0


def _add_flow_args(p: Parser, no_insights_help: str) -> None:
    """How the benchmarks that run the flow run it (as `shems run` would be told)."""
    p.add("--workers", "-w", type=positive_int, default=1, help="Bytewax workers per flow process")
    p.add("--processes", "-p", type=positive_int, default=1, help="flow processes (a Bytewax cluster)")
    p.add("--no-insights", action="store_true", help=no_insights_help)
    p.add("--mqtt-in-process", action="store_true", help="run the flow with `shems run --mqtt-in-process`")
    p.add("--mqtt-process", action="store_true", help="the flow's MQTT client in its own process (the default)")


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    kinds = bench.add_subparsers(dest="bench", required=True, parser_class=type(bench))
    p = kinds.add_parser("ingest", help="publish -> committed rate and latency against real broker and store")
    p.add("--devices", type=positive_int, default=10_000, help="fleet size")
    p.add("--seconds", type=positive_float, default=20.0, help="length of the paced latency phase")
    p.add("--rate", type=positive_float, default=5000.0, help="readings/s in the paced phase")
    p.add("--burst", type=positive_int, default=None, help="messages in the throughput burst (default max(50000, 5 x devices))")
    p.add("--naive-burst", type=positive_int, default=None, help="messages for the naive baseline (default min(burst, 20000))")
    p.add("--qos", type=qos, default=1, help="QoS of every measurement")
    p.add("--mqtt-url", type=mqtt_url, default=None, help="broker (default: a private Mosquitto without queue limits)")
    p.add("--store-url", type=postgres_store_url, default=None,
          help="PostgreSQL store (default: a fresh database, dropped after)")
    _add_flow_args(p, "run the flow without forecasts, anomalies and recommendations (the ingest core alone)")
    p.add("--json", action="store_true", help="end with one JSON line")
    p.set_defaults(handler=cmd_bench)

    d = kinds.add_parser("drain", help="a queued backlog drained by the flow vs a subscriber that only counts")
    d.add("--readings", type=positive_int, default=100_000, help="readings queued while both consumers are offline")
    d.add("--devices", type=positive_int, default=2_000, help="devices they come from (5 per home)")
    d.add("--store-url", type=store_url, default=None,
          help="store for the flow (default: a fresh SQLite file, removed after)")
    _add_flow_args(d, "run the flow without forecasts, anomalies and recommendations")
    d.add("--recovery", action="store_true",
          help="run the flow with --recovery-dir (snapshots, and the spool its MQTT client writes)")
    d.add("--json", action="store_true", help="end with one JSON line")
    d.set_defaults(handler=cmd_drain)

    register_state(kinds)


def cmd_bench_state(args) -> int:
    from rich.console import Console

    from pipeline.tools.bench_state import print_state_result, run_state_bench

    console = Console(stderr=args.json)  # keep stdout's last line for the JSON
    print_state_result(run_state_bench(args.homes, args.days), console, args.json)
    return 0


def register_state(kinds) -> None:
    p = kinds.add_parser("state", help="snapshot bytes, memory and time per window of one home's insights state")
    p.add("--homes", type=positive_int, default=20, help="homes of 5 devices (a meter and 4 appliances), a TOU tariff")
    p.add("--days", type=positive_int, default=30, help="days of 1-minute windows fed to each home")
    p.add("--json", action="store_true", help="end with one JSON line")
    p.set_defaults(handler=cmd_bench_state)
