"""Home minutes to slot means, hour by hour, with coverage.

Definitions:

* A home minute (``HomeWindow``, mean power W) stands for the time from its bucket until the next
  minute the home sends, but at most the home's usual sampling step (the median of its last
  gaps) and never more than ``max_hold_min``. A 1-minute stream covers exactly its own minutes; a
  half-hourly meter covers its half hours; a silence longer than the step is a gap, not a flat load.
* The open hour (and the start of the next one, where a held value may reach) is kept minute by
  minute. It closes when a minute of a later hour arrives: event time, no wall clock.
* A minute that comes again while its hour is open replaces its value (the flow re-emits a minute
  when a late device minute arrives); one for an hour already closed is ignored.
* A slot's value is the mean over its covered minutes, or MISSING when fewer than
  ``min_coverage`` of its minutes are covered. Missing is never zero.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

NAN = math.nan
_SPAN = 120  # the open hour and the next, where a held value can reach
_GAPS = 7
_NONE = -32768  # no source: the minute is uncovered


@dataclass(frozen=True, slots=True)
class ClosedSlot:
    resolution: int  # minutes
    start_min: int  # UTC epoch minute of the slot start
    value: float | None  # mean power W, None when MISSING
    coverage: float  # share of its minutes covered


class MinuteSlotter:
    """Per home. Picklable (a few hundred bytes)."""

    __slots__ = ("resolutions", "min_coverage", "max_hold", "open_hour", "values", "sources",
                 "pending_min", "pending_value", "gaps", "gap_count")

    def __init__(self, resolutions: tuple[int, ...], min_coverage: float, max_hold_min: int) -> None:
        self.resolutions = resolutions
        self.min_coverage = min_coverage
        self.max_hold = max_hold_min
        self.open_hour: int | None = None
        self.values = array("f", [NAN]) * _SPAN
        # Which minute (offset from the open hour) each covered minute's value came from, so a
        # re-sent minute replaces what it held; _NONE where uncovered.
        self.sources = array("h", [_NONE]) * _SPAN
        self.pending_min: int | None = None  # the newest minute, not yet spread over its hold
        self.pending_value = NAN
        self.gaps = array("H", [0]) * _GAPS
        self.gap_count = 0

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    def usual_step(self) -> int:
        n = min(self.gap_count, _GAPS)
        if n == 0:
            return 1
        return sorted(self.gaps[:n])[n // 2]

    def add(self, minute: int, power_w: float) -> list[ClosedSlot]:
        """Take one home minute (UTC epoch minute); return the slots of every hour it closes."""
        hour = minute - minute % 60
        if self.open_hour is None:
            self.open_hour = hour
        if hour < self.open_hour:
            return []  # its hour is closed
        pending = self.pending_min
        if pending is not None and minute <= pending:
            if minute == pending:
                self.pending_value = power_w
            else:
                self._replace(minute, power_w)
            return []
        if pending is not None:
            gap = minute - pending
            self.gaps[self.gap_count % _GAPS] = min(gap, 65535)
            self.gap_count += 1
            hold = min(gap, max(1, min(self.usual_step(), self.max_hold)))
            self._credit(pending, self.pending_value, hold)
        self.pending_min, self.pending_value = minute, power_w
        closed: list[ClosedSlot] = []
        while hour > self.open_hour:
            closed.extend(self._close())
            if hour > self.open_hour and self._empty():
                self.open_hour = hour  # nothing reaches the hours between: they are missing
        return closed

    def _credit(self, start: int, value: float, length: int) -> None:
        base = self.open_hour
        assert base is not None  # set by the first add()
        offset = start - base
        for i in range(max(0, offset), min(_SPAN, offset + length)):
            self.values[i] = value
            self.sources[i] = offset

    def _replace(self, minute: int, power_w: float) -> None:
        assert self.open_hour is not None  # set by the first add()
        offset = minute - self.open_hour
        if self.sources[offset] != offset:  # uncovered, or held from an earlier minute
            self.values[offset] = power_w
            self.sources[offset] = offset
        for i in range(_SPAN):
            if self.sources[i] == offset:
                self.values[i] = power_w

    def _empty(self) -> bool:
        return all(s == _NONE for s in self.sources)

    def _close(self) -> list[ClosedSlot]:
        hour = self.open_hour
        assert hour is not None  # set by the first add()
        minutes = self.values[:60]
        out = []
        for res in self.resolutions:
            for start in range(0, 60, res):
                covered = [v for v in minutes[start:start + res] if v == v]
                coverage = len(covered) / res
                value = math.fsum(covered) / len(covered) if coverage >= self.min_coverage else None
                out.append(ClosedSlot(res, hour + start, value, coverage))
        self.values = self.values[60:] + array("f", [NAN]) * 60
        self.sources = array("h", [s - 60 if s != _NONE else _NONE for s in self.sources[60:]]) \
            + array("h", [_NONE]) * 60
        self.open_hour = hour + 60
        return out

