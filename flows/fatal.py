"""Ending the process for an error that is not about one record (bad configuration, a schema the
code does not know, a full disk): one structured log line, one plain line on stderr, exit 1.

The process is left with ``os._exit``: Bytewax turns an exception raised inside a worker into a
Rust panic that prints a backtrace of several dozen lines, and nothing is gained by unwinding (an
orchestrator restarts the process; with ``--recovery-dir`` the spool and the snapshots hold what
was in flight, and without it paho has not acknowledged what the flow did not take).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from pipeline.logs import get_logger

log = get_logger(__name__)

EXIT_FAILED = 1

# Run just before a deliberate exit: it is not a crash caused by the message in hand, so the
# spool's crash guard must not blame that message (flows/spool.py: CrashGuard.settled).
_BEFORE_EXIT: list[Callable[[], None]] = []


def before_exit(callback: Callable[[], None]) -> None:
    _BEFORE_EXIT.append(callback)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (Bytewax wraps the one that matters in its own)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def describe(exc: BaseException) -> str:
    """One line: the root cause's class and first line of message."""
    cause = root_cause(exc)
    lines = str(cause).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _program() -> str:
    """``shems <command>`` as invoked (the same dataflow code serves ``run`` and ``import``)."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    return f"shems {command}" if command.isidentifier() else "shems"


def exit_now(where: str, message: str) -> NoReturn:
    """Log ``flow_failed``, print ``shems <command>: error: <message>`` and end the process."""
    try:
        for callback in _BEFORE_EXIT:
            try:
                callback()
            except Exception:  # noqa: BLE001 - best effort: the exit must happen
                pass
        log.error("flow_failed", where=where, error=message)
        sys.stdout.flush()
        sys.stderr.write(f"{_program()}: error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_FAILED)
