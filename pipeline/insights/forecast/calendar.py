"""The home's local clock: UTC minutes to local slot numbers, DST-correct via zoneinfo.

A *local slot number* counts slots of the local wall clock since 1970-01-01 00:00 local, so the
same wall-clock slot one day earlier is always ``n - slots_per_day``, even across a DST change.
The skipped spring hour has no UTC slot mapping to it (it stays missing in the history), and the
repeated autumn hour maps two UTC slots onto one local slot (the later one is kept).
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_CACHE_LIMIT = 4096


class LocalClock:
    """Offsets of one time zone, cached per quarter hour. Pickles as just the zone name."""

    __slots__ = ("tz", "_zone", "_cache")

    def __init__(self, tz: str) -> None:
        self.tz = tz
        self._zone = ZoneInfo(tz)
        self._cache: dict[int, int] = {}

    def __getstate__(self) -> str:
        return self.tz

    def __setstate__(self, tz: str) -> None:
        type(self).__init__(self, tz)

    def offset_min(self, epoch_min: int) -> int:
        """The zone's UTC offset in minutes at that instant."""
        key = epoch_min // 15  # every real zone changes offset on a quarter hour
        offset = self._cache.get(key)
        if offset is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            at = datetime.fromtimestamp(key * 900, timezone.utc).astimezone(self._zone)
            utc_offset = at.utcoffset()
            assert utc_offset is not None  # an aware time: made in a zone
            offset = self._cache[key] = int(utc_offset.total_seconds()) // 60
        return offset

    def local_slot(self, epoch_min: int, res: int) -> int:
        return (epoch_min + self.offset_min(epoch_min)) // res


def day_of_week(local_slot: int, res: int) -> int:
    """Monday = 0 … Sunday = 6 of a local slot number (1970-01-01 was a Thursday)."""
    return (local_slot * res // 1440 + 3) % 7
