"""A home-wide outage: most of a home's devices silent at once is ONE anomaly of the home.

A power cut or a router that went down silences every device of a home within a minute or two.
Told device by device it would be five SILENT anomalies (five notifications) for one event; told
here it is one SILENT anomaly of the home (``device_id == ""``) whose message lists the devices. A
device that goes quiet alone stays a device anomaly.

The rule, applied when a device's SILENT opens (the wall clock's ``check`` in a live flow; its
late window in a replay, where it opens and closes at once): the home's devices warm for SILENT
that were still being heard when this one went quiet (their last window within their own silence
limit of its last) are *active*; those of them whose last window lies within ``outage_span_s`` of
this one's and which have sent nothing for at least their usual longest gap since are *quiet
together*. When at least ``outage_min_devices`` are quiet together and they make at least
``outage_share`` of the active ones, the home's outage opens instead of the device's anomaly. Its
``started_at`` is the earliest of the members' own SILENT starts (their last window plus a window
plus their limit: the same in a live flow and in a replay, the store's key); it closes at the
first member's return. Only event time (the devices' last windows) decides who is a member, so a
live flow and a replay of the same data group the same devices.

The members' own SILENT anomalies are absorbed while the outage is open and for
``outage_span_s`` after it closed (a home comes back over a few minutes). A member still quiet
after that is released: its own SILENT, if it had opened, is reported then as the device's, and
the rest of its silence is its own.

Score: the longest member silence divided by its usual longest reporting gap, as for a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.insights.anomaly.device import DeviceDetector
from pipeline.insights.anomaly.settings import AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import duration
from pipeline.records import Anomaly, AnomalyKind, DeviceWindow

_LISTED = 12  # names in a message; the rest are counted


@dataclass(slots=True)
class _Outage:
    start: float  # the members' earliest SILENT start
    since: float  # the end of the members' earliest last window: when the home went quiet
    members: tuple[str, ...]
    names: tuple[str, ...]
    usual: float  # the trigger's usual longest gap, for the score
    end: float | None = None
    pending: set[str] = field(default_factory=set)  # members not heard from since


class HomeOutage:
    """The home's device detectors' SILENT anomalies, grouped when the whole home went quiet."""

    def __init__(self, settings: AnomalySettings = AnomalySettings()) -> None:
        self.settings = settings
        self.current: _Outage | None = None
        self.subject: Subject | None = None

    # ------------------------------------------------------------------ feeding

    def add(self, detectors: dict[str, DeviceDetector], window: DeviceWindow, tz: str,
            now_wall: datetime | None = None) -> list[Anomaly]:
        """Feed one device window to its detector (made on its first window) and return what it
        found, its SILENT grouped with the home's other devices' (see the module)."""
        detector = detectors.get(window.device_id)
        if detector is None:
            detector = detectors[window.device_id] = DeviceDetector(self.settings, tz)
        before = detector.last_ts
        found = detector.add(window, now_wall)
        if self.current is None and not found:
            return found  # the hot path: nothing to group
        return self._device(detectors, window.device_id, before, window.bucket.timestamp(), found)

    def check(self, detectors: dict[str, DeviceDetector], now_wall: datetime) -> list[Anomaly]:
        """The wall-clock checks of every device detector (devices that stopped reporting)."""
        out: list[Anomaly] = []
        for device_id, detector in detectors.items():
            found = detector.check(now_wall)
            if not found:
                continue
            o = self.current
            if o is not None and device_id in o.pending:
                continue  # part of the home's outage
            start = detector.silence.open_start
            assert start is not None and detector.last_ts is not None  # check() just opened it
            grouped = self._group(detectors, device_id, detector.last_ts, start)
            out.extend(found if grouped is None else grouped)
        return out

    # ------------------------------------------------------------------ grouping

    def _device(self, detectors: dict[str, DeviceDetector], device_id: str, before: float | None,
                ts: float, found: list[Anomaly]) -> list[Anomaly]:
        out = self._release(detectors, ts)
        o = self.current
        if o is not None and device_id in o.pending:
            o.pending.discard(device_id)
            if o.end is None:  # the first member back: the home is back
                o.end = ts
                out.append(self._closed(o))
            return out + [a for a in found if a.kind != AnomalyKind.SILENT]
        # A SILENT opened here (a replay: the window came late) may be the home's; one that only
        # closes was opened alone by check() and closes alone.
        opened_here = [a for a in found if a.kind == AnomalyKind.SILENT and a.ended_at is None]
        if opened_here and before is not None:
            grouped = self._group(detectors, device_id, before, opened_here[0].started_at.timestamp())
            if grouped is not None:
                assert self.current is not None
                self.current.pending.discard(device_id)
                self.current.end = ts
                out.extend(grouped)
                out.append(self._closed(self.current))
                return out + [a for a in found if a.kind != AnomalyKind.SILENT]
        return out + found

    def _group(self, detectors: dict[str, DeviceDetector], trigger: str, last: float,
               start: float) -> list[Anomaly] | None:
        """The home's outage opened if ``trigger`` (last window at ``last``, SILENT from
        ``start``) went quiet together with most of the home; None when it is alone."""
        s = self.settings
        if self.current is not None and self.current.end is None:
            return None  # a late one after the home went quiet: told as the device's
        active = 0
        quiet: list[tuple[str, DeviceDetector, float]] = []
        for device_id, detector in detectors.items():
            silence = detector.silence
            their_last = last if device_id == trigger else detector.last_ts
            if their_last is None or not silence.warm():
                continue
            if their_last + window_plus(s, silence.limit()) < last:
                continue  # already silent before: another story
            active += 1
            if (abs(their_last - last) <= s.outage_span_s
                    and their_last + silence.usual_gap() < start):
                quiet.append((device_id, detector, their_last))
        if len(quiet) < max(2, s.outage_min_devices) or len(quiet) < s.outage_share * active:
            return None
        released = self._release(detectors, None)  # an earlier outage's stragglers are on their own now
        quiet.sort(key=lambda q: q[0])
        starts = [start if d == trigger else t + window_plus(s, det.silence.limit())
                  for d, det, t in quiet]
        trigger_detector = detectors[trigger]
        if self.subject is None or not self.subject.home_id:
            self.subject = Subject(trigger_detector.subject.home_id, "", "home",
                                   trigger_detector.subject.clock)
        self.current = _Outage(
            start=min(starts), since=min(t for _, _, t in quiet) + s.window_s,
            members=tuple(d for d, _, _ in quiet), names=tuple(det.subject.name for _, det, _ in quiet),
            usual=trigger_detector.silence.usual_gap(), pending={d for d, _, _ in quiet})
        return released + [self._opened(self.current)]

    def _release(self, detectors: dict[str, DeviceDetector], ts: float | None) -> list[Anomaly]:
        """Forget the outage once it closed ``outage_span_s`` before ``ts`` (None: now); a
        member still quiet reports its own open SILENT from then on."""
        o = self.current
        if o is None or o.end is None or (ts is not None and ts <= o.end + self.settings.outage_span_s):
            return []
        self.current = None
        out = []
        for device_id in sorted(o.pending):
            detector = detectors.get(device_id)
            if detector is not None and detector.silence.open_start is not None:
                out.append(detector.silence.opened(detector.subject, detector.silence.open_start))
        return out

    # ------------------------------------------------------------------ the record

    def _names(self, o: _Outage) -> str:
        names = list(o.names[:_LISTED])
        if len(o.names) > _LISTED:
            names.append(f"{len(o.names) - _LISTED} more")
        return ", ".join(names[:-1]) + " and " + names[-1]

    def _opened(self, o: _Outage) -> Anomaly:
        assert self.subject is not None
        subject = self.subject
        return subject.anomaly(
            AnomalyKind.SILENT, o.start, None, (o.start - o.since) / o.usual,
            f"Your home went quiet: {len(o.members)} devices ({self._names(o)}) have sent nothing "
            f"since {subject.when(o.since, o.start)}. A power cut or the home's internet "
            "connection is the likely cause.")

    def _closed(self, o: _Outage) -> Anomaly:
        assert self.subject is not None and o.end is not None
        subject = self.subject
        return subject.anomaly(
            AnomalyKind.SILENT, o.start, o.end, (o.end - o.since) / o.usual,
            f"Your home went quiet: {len(o.members)} devices ({self._names(o)}) sent nothing "
            f"from {subject.when(o.since)} to {subject.when(o.end, o.since)} "
            f"({duration(o.end - o.since)}). A power cut or the home's internet connection is the "
            "likely cause.")


def window_plus(settings: AnomalySettings, limit: float) -> float:
    """From a device's last window's start to its SILENT start."""
    return settings.window_s + limit
