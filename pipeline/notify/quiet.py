"""Quiet hours: a daily span of local wall-clock time in which notices wait.

``start``/``end`` are local times; the span may wrap midnight (22:00-07:00); start == end means
no quiet hours. The user's time zone is the one they set, else their home's, so "quiet from 22:00"
means 22:00 where they live, across daylight-saving changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def parse_hhmm(text: str) -> time:
    try:
        hour, minute = (int(p) for p in text.strip().split(":"))
        return time(hour, minute)
    except (ValueError, TypeError):
        raise ValueError(f"expected a time HH:MM, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:  # an unknown zone fails here, not at 22:00
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (e.g. Europe/London)") from None

    def active(self, now: datetime) -> bool:
        """Whether a notice at ``now`` (aware) must wait."""
        if self.start == self.end:
            return False
        local = now.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, now: datetime) -> datetime:
        """The first instant at or after ``now`` outside quiet hours (``now`` when not quiet)."""
        if not self.active(now):
            return now
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        day = local.date() if local.time().replace(tzinfo=None) < self.end else local.date() + timedelta(days=1)
        # fold=0 and a round trip through UTC put an end inside a skipped hour at its real instant.
        end = datetime.combine(day, self.end, zone)
        return end.astimezone(ZoneInfo("UTC"))
