"""A home's local wall clock for event times given as UTC epoch seconds."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_BLOCK_S = 900


class LocalClock:
    """UTC instants to local time in one IANA time zone, daylight saving included.

    The UTC offset is cached per 15 minutes of UTC: every zone's offset is a multiple of 15
    minutes and changes at a local time on such a boundary, so the cache is exact, and most windows
    cost an integer division. Picklable (the zone is rebuilt from its name).
    """

    def __init__(self, tz: str) -> None:
        try:
            self._zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as Europe/London") from None
        self.tz = tz
        self._block = -1
        self._offset = 0.0

    def __getstate__(self) -> dict:
        return {"tz": self.tz}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["tz"])

    def offset_s(self, ts: float) -> float:
        block = int(ts // _BLOCK_S)
        if block != self._block:
            start = datetime.fromtimestamp(block * _BLOCK_S, self._zone)
            offset = start.utcoffset()
            assert offset is not None  # an aware time: made in a zone
            self._offset = offset.total_seconds()
            self._block = block
        return self._offset

    def hour_of_day(self, ts: float) -> int:
        return int((ts + self.offset_s(ts)) % 86400 // 3600)

    def hour_key(self, ts: float) -> int:
        """Numbers the local clock hours: equal for instants in the same local hour."""
        return int((ts + self.offset_s(ts)) // 3600)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, timezone.utc).astimezone(self._zone)
