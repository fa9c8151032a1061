"""``shems execute``: send accepted plans' commands at their times, confirm them by measured
power, re-plan when a device does not follow (pipeline/tools/plan_executor.py); ``--status``
prints a plan's slots planned against measured."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.cli.args import Parser, add_broker_args, add_poll_args, add_store_arg, existing_file, positive_float
from pipeline.cli.common import one_line, open_database, poll_store

if TYPE_CHECKING:
    from pipeline.tools.plan_executor import PollResult


def cmd_execute(args: argparse.Namespace) -> int:
    from pipeline.logs import configure
    from pipeline.tools.plan_executor import ExecutorSettings, PlanExecutor

    configure()
    db = open_database("execute", args.store_url)
    if db is None:
        return 1
    try:
        if args.status:
            return _status(db, args.home, args.plan)
        from pipeline.tools.publisher import Publisher

        try:
            publisher = Publisher(args.mqtt_url, qos=1, client_id=args.client_id)
        except (OSError, ValueError) as exc:
            print(f"shems execute: error: cannot reach the broker: {one_line(exc)}", file=sys.stderr)
            return 1

        def send(topic: str, payload: bytes) -> None:
            publisher.publish_raw(topic, payload)
            publisher.flush(timeout=10.0)  # the broker has it (PUBACK) before it is marked sent

        settings = ExecutorSettings(args.topic_prefix, args.ack_timeout_s, args.settle_s, args.window_s,
                                    args.store_delay_s)
        receding = None
        if args.registry:
            from datetime import timedelta

            from pipeline.ingest.registry import Registry
            from pipeline.tools.receding import RecedingHorizon, RecedingSettings

            try:
                registry = Registry.load(args.registry)
            except (OSError, ValueError) as exc:
                print(f"shems execute: error: {one_line(exc)}", file=sys.stderr)
                return 1
            receding = RecedingHorizon(db, registry, RecedingSettings(timedelta(seconds=args.replan_every_s),
                                                                      args.replan_hours))
        executor = PlanExecutor(db, send, settings, receding)
        try:
            return poll_store(executor, args, "executor_started", _poll_summary)
        finally:
            publisher.close()
    finally:
        db.close()


def _poll_summary(r: PollResult) -> str:
    return (f"sent {r.sent}, acknowledged {r.acknowledged}, confirmed {r.confirmed}, "
            f"not followed {r.not_followed}, superseded {r.superseded}, re-planned {len(r.replanned)}")


def _status(db, home: str | None, plan_id: str | None) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ui.plans import PlanStore, planned_vs_actual

    store = PlanStore(db)
    ids = [plan_id] if plan_id else store.plans(home_id=home)
    if not ids:
        print("no accepted plans" + (f" for {home}" if home else ""))
        return 0
    console = Console()
    for pid in ids:
        stored = store.plan(pid)
        if stored is None:
            print(f"shems execute: error: no plan {pid!r}", file=sys.stderr)
            return 1
        cur = stored.currency
        # Device ids and answers come from devices and users: never rich markup.
        console.print(f"[bold]{escape(pid)}[/bold] {escape(stored.home_id)} ({stored.status}) accepted by "
                      f"{escape(stored.accepted_by)}; "
                      f"planned cost {stored.cost:.4f} {cur}, without the plan {stored.baseline_cost:.4f} {cur}")
        commands = Table(title="commands")
        for column in ("at (UTC)", "device", "command", "status", "measured W", "note"):
            commands.add_column(column)
        for c in store.commands(pid):
            commands.add_row(f"{c.command.run_at:%m-%d %H:%M:%S}", escape(c.command.device_id),
                             c.command.set_command(c.command_id).describe(), c.status,
                             "" if c.measured_w is None else f"{c.measured_w:,.0f}", escape(c.message))
        console.print(commands)
        slots = Table(title="planned vs measured (W means per slot; grid + import, - export)")
        for column in ("slot (UTC)", "device", "planned W", "measured W"):
            slots.add_column(column, justify="right")
        measured_cost = 0.0
        for s in planned_vs_actual(store, pid):
            rows = [("grid", s.planned_grid_w, s.measured_grid_w)] + [
                (d, s.planned[d], s.measured[d]) for d in s.planned]
            for device, planned, measured in rows:
                slots.add_row(f"{s.start:%m-%d %H:%M:%S}", escape(device), f"{planned:,.0f}",
                              "" if measured is None else f"{measured:,.0f}")
            measured_cost += s.cost(s.measured_grid_w, stored.problem.slot) or 0.0
        console.print(slots)
        console.print(f"measured grid cost so far {measured_cost:.4f} {cur}")
    return 0


def register(sub) -> None:
    p: Parser = sub.add_parser(
        "execute", help="carry accepted plans out: send commands on time, confirm them, re-plan",
        description="Sends the commands of plans accepted with `shems plan --accept` (or the viewer) at "
                    "their times, confirms each by the device's measured power and plans the rest of the "
                    "horizon again when a device does not follow.")
    add_store_arg(p)
    add_broker_args(p)
    p.add("--client-id", default="shems-executor", help="MQTT client id")
    add_poll_args(p, interval_s=5.0)
    p.add("--ack-timeout-s", type=positive_float, default=60.0,
          help="a device that has not answered a command by then did not follow it")
    p.add("--settle-s", type=positive_float, default=60.0,
          help="seconds after the answer before the device's power is judged")
    p.add("--window-s", type=positive_float, default=120.0, help="seconds of readings the judgement averages")
    p.add("--store-delay-s", type=positive_float, default=15.0,
          help="how long readings take to reach the store (the flow's batching)")
    p.add("--registry", type=existing_file, default=None,
          help="device registry: plan each home with a battery spec afresh every --replan-every-s")
    p.add("--replan-every-s", type=positive_float, default=3600.0,
          help="with --registry: seconds between a home's receding-horizon plans (default 3600)")
    p.add("--replan-hours", type=positive_float, default=24.0,
          help="with --registry: hours each receding-horizon plan covers (default 24)")
    p.add("--status", action="store_true", help="print plans, their commands and planned vs measured, then exit")
    p.add("--home", default=None, help="with --status: this home's plans")
    p.add("--plan", default=None, help="with --status: this plan")
    p.set_defaults(handler=cmd_execute)
