"""The ``shems`` command line: the entry point and its explicit list of subcommands.

Each module beside this one holds one group of subcommands (its handlers and a ``register``
that adds its parser and sets its handler); argument types live in ``pipeline.cli.args``. Nothing
outside this package imports it: it is the outermost layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pipeline.cli import (
    bench,
    bill,
    evaluate,
    execute,
    http,
    import_export,
    notify,
    plan,
    publish,
    run,
    savings,
    viewer,
)
from pipeline.cli.args import Parser

# In the order `shems --help` lists them.
SUBCOMMANDS: tuple[Callable, ...] = (
    run.register,
    import_export.register_import,
    publish.register_replay,
    publish.register_simulate,
    publish.register_demo,
    evaluate.register,
    import_export.register_export,
    bench.register,
    plan.register,
    execute.register,
    bill.register,
    savings.register,
    viewer.register_ui,
    viewer.register_user,
    notify.register,
    http.register_http,
    http.register_apikey,
)


def build_parser() -> Parser:
    parser = Parser(prog="shems", description="Smart-home energy management pipeline")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        print(f"shems {args.command}: error: {_innermost_error(exc)}", file=sys.stderr)
        return 1


def _innermost_error(exc: BaseException) -> str:
    """The innermost cause of an error, in one line (libraries such as Bytewax wrap it)."""
    seen = set()
    while id(exc) not in seen and (inner := exc.__cause__ or exc.__context__) is not None:
        seen.add(id(exc))
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__

