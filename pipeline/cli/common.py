"""What every subcommand's handler shares: one-line errors, the store check, stop signals, the
polling loop."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

Result = TypeVar("Result", covariant=True)


def fail(message: str, status: int = 2) -> int:
    print(f"shems: error: {message}", file=sys.stderr)
    return status


def one_line(exc: BaseException) -> str:
    """An exception as one line: the innermost cause (Bytewax wraps an operator's error in its
    own), first line only, with any password in a URL masked."""
    from sinks.base import mask_url

    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return " ".join(mask_url(word) if "://" in word else word for word in text.split(" "))


def serve_metrics(port: int | None) -> str | None:
    """Serve Prometheus metrics on ``port`` (every interface: the scraper is another machine);
    None when serving or not asked to, else why not, on one line."""
    if not port:
        return None
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:  # taken, or below 1024 without the right
        return f"cannot serve metrics on port {port}: {exc.strerror or exc}"
    return None


def cannot_open_store(url: str, exc: BaseException) -> str:
    """Why the store at ``url`` could not be opened, on one line, its password masked."""
    from sinks.base import mask_url

    return f"cannot open the store {mask_url(url)}: {one_line(exc)}"


def check_store_reachable(url: str) -> str | None:
    """None when the store answers, else why not (one line). Before any work: an import of a big
    file must not read it all to then find the store down."""
    from sinks.stores import open_store

    try:
        open_store(url).close()
    except Exception as exc:  # the driver's error: refused, timed out, wrong password, bad path
        return cannot_open_store(url, exc)
    return None


def open_database(command: str, url: str):
    """The store through the viewer's data layer, migrated, for the commands that work on its
    tables (notify, execute, ...); None after one line on stderr when it cannot be opened."""
    from ui.db import Database

    problem = check_store_reachable(url)
    if problem:
        print(f"shems {command}: error: {problem}", file=sys.stderr)
        return None
    try:
        return Database(url, migrate=True)
    except Exception as exc:  # noqa: BLE001 - a schema it cannot migrate: one line
        print(f"shems {command}: error: {cannot_open_store(url, exc)}", file=sys.stderr)
        return None


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


class Poller(Protocol[Result]):
    """A process that works through the store one poll at a time (the notifier, the executor)."""

    def poll(self) -> Result: ...

    def run(self, interval_s: float, stop: threading.Event) -> None: ...


def poll_store(poller: Poller[Result], args: argparse.Namespace, started_event: str,
               summary: Callable[[Result], str]) -> int:
    """What the options of ``add_poll_args`` ask: ``--once``, one poll and its ``summary`` line;
    else a poll every ``--interval`` seconds until SIGINT/SIGTERM."""
    from pipeline.logs import get_logger
    from sinks.base import mask_url

    if args.once:
        print(summary(poller.poll()))
        return 0
    get_logger(__name__).info(started_event, store=mask_url(args.store_url), interval_s=args.interval)
    poller.run(args.interval, install_stop_handlers())
    return 0
