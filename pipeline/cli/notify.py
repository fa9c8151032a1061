"""``shems notify``: send anomalies, budget alerts and new recommendations to users' Apprise
targets (pipeline/tools/notifier.py says why it is a process of its own)."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from pipeline.cli.args import Parser, add_poll_args, add_store_arg, positive_float, timezone_name
from pipeline.cli.common import open_database, poll_store

if TYPE_CHECKING:
    from pipeline.tools.notifier import PollResult


def instant(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date or time, got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def cmd_notify(args: argparse.Namespace) -> int:
    from pipeline.logs import configure
    from pipeline.tools.notifier import Notifier

    configure()
    db = open_database("notify", args.store_url)
    if db is None:
        return 1
    notifier = Notifier(db, timezone_name=args.timezone, lookback=timedelta(hours=args.lookback_hours),
                        since=args.since)
    try:
        return poll_store(notifier, args, "notifier_started", _poll_summary)
    finally:
        db.close()


def _poll_summary(r: PollResult) -> str:
    return f"queued {r.queued}, sent {r.sent}, held by quiet hours {r.held}, failed {r.failed}"


def register(sub) -> None:
    p: Parser = sub.add_parser(
        "notify", help="send anomalies, budget alerts and new recommendations to users' Apprise targets",
        description="Polls the store for new anomalies and recommendations (and queued budget alerts) "
                    "and sends each once to the Apprise targets users set on the viewer's Account page, "
                    "holding them during a user's quiet hours.")
    add_store_arg(p)
    add_poll_args(p, interval_s=30.0)
    p.add("--since", type=instant, default=None,
          help="on the first run only: tell events from this time on (default: from now; history is not told)")
    p.add("--lookback-hours", type=positive_float, default=48.0,
          help="how late an event may be stored after it happened and still be told (default 48)")
    p.add("--timezone", type=timezone_name, default="UTC",
          help="quiet hours' zone for users and homes that have none (default UTC)")
    p.set_defaults(handler=cmd_notify)
