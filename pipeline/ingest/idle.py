"""Closing on silence, shared by the device windower and the home aggregator: what either holds
open is emitted once its input has been silent for ``idle_close_s`` of wall-clock time, so a
device or home that stops reporting does not hold its last minute open for ever."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Generic, TypeVar

from pipeline.settings import WindowSettings

Output = TypeVar("Output")


class ClosesWhenIdle(Generic[Output]):
    __slots__ = ()  # the device windower keeps its state in slots (and pickles them by name)

    settings: WindowSettings
    last_wall: datetime | None  # wall-clock time of the newest input
    _output: type[Output]  # what close_due returns when nothing is due: an empty one

    def _holds_open(self) -> bool:
        raise NotImplementedError

    def flush(self) -> Output:
        raise NotImplementedError

    def next_due(self) -> datetime | None:
        if not self._holds_open() or self.last_wall is None:
            return None
        return self.last_wall + timedelta(seconds=self.settings.idle_close_s)

    def close_due(self, now_wall: datetime) -> Output:
        due = self.next_due()
        if due is None or now_wall < due:
            return self._output()
        return self.flush()
