"""Reading a river statistic that has already seen data."""

from __future__ import annotations

from typing import Protocol


class Statistic(Protocol):
    def get(self) -> float | None: ...


def learned(statistic: Statistic) -> float:
    """The statistic's value; river types ``get()`` as optional because an empty statistic has
    none, and every caller here reads one only after its warm-up has fed it."""
    value = statistic.get()
    if value is None:
        raise ValueError(f"{type(statistic).__name__} read before it saw any data")
    return value
