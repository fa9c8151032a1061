"""The TOML files users write (device registry, tariffs, deferrable loads), read so that every
mistake in one is a ValueError naming the file and the place, never a TypeError from deep inside
the parser that reads it."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, which TOML files are") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None


def array_of_tables(value: object, name: str, where: str) -> list[Mapping[str, Any]]:
    """``value`` as the list ``[[name]]`` entries make (none when absent). ``[name]`` with single
    brackets, the usual slip, makes one table instead, whose keys would be read as entries."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        raise ValueError(f"{where}: write [[{name}]] with double brackets, once per entry; "
                         f"[{name}] makes a single table")
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ValueError(f"{where}: '{name}' must be [[{name}]] tables, not {_kind(value)}")
    return value


@contextmanager
def wrong_types_are_errors(where: str) -> Iterator[None]:
    """A value of a type the reader did not check for (a number where a list of day names goes,
    ...) ends as one ValueError naming the file, like every mistake it does check for."""
    try:
        yield
    except (TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"{where}: a value has the wrong type ({exc})") from None


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list of values"
    return f"{type(value).__name__} {value!r}"[:80]
