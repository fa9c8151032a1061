"""HIGH_CONSUMPTION: the last hour far above what this home usually uses at this time of day.

The profile is one rolling quantile per local hour of day (River's ``RollingQuantile`` over the
last ``high_history_days`` values of that hour: 24 x 28 floats), fed the mean power of each
complete local clock hour. The live statistic is the energy of the last 60 minutes (energy, not
minute power, so 30-minute meters and 30-second meters read alike), compared with the usual high
of the current hour and its neighbours (the hour straddles two clock hours, and habits shift by
an hour). It alerts when the last hour has stayed over max(``high_factor`` x usual high, usual high
+ ``high_margin_w``) for ``high_persist_s`` (dips under ``high_hold_share`` of it excepted): a
dinner cooked on every ring peaks for an hour and is not an alert, a heater left on stays. It
clears when the last hour is back under the usual high. Daylight saving is handled by the home's
clock: a local hour is a local hour.

A complete hour is learned only once it can no longer become part of an anomaly (an hour and
``high_persist_s`` after it ended); the hours an anomaly covers are not learned (for up to
``learn_pause_max_s``), so a heater left on one night does not lift that time of day's usual high
for four weeks and hide the next.
Peaks that never become an anomaly are learned: the usual high must know the home's real peaks.

Score: the last hour's consumption divided by the usual high for that time of day (the largest
seen while the anomaly was open); 2.5 means two and a half times the usual high.
"""

from __future__ import annotations

from array import array

from pipeline.insights.anomaly.learned import learned
from pipeline.insights.anomaly.rolling import RollingQuantile, compact
from pipeline.insights.anomaly.settings import HOUR, AnomalySettings
from pipeline.insights.anomaly.subject import Subject
from pipeline.insights.anomaly.text import energy
from pipeline.records import Anomaly, AnomalyKind

_MAX_COVER_S = 1800.0  # one window never vouches for more than half an hour of energy


class HourOfDayProfile:
    """The usual high mean power of each local hour of day."""

    def __init__(self, quantile: float, days: int) -> None:
        self.slots = [RollingQuantile(q=quantile, window_size=days) for _ in range(24)]
        self.counts = [0] * 24

    def __getstate__(self):
        # One array for the 24 windows (their lengths apart): a tenth of River's own pickles.
        windows = [slot.values() for slot in self.slots]
        return (self.slots[0].q, self.slots[0].window_size, array("q", self.counts),
                array("H", map(len, windows)), array("d", [x for w in windows for x in w]))

    def __setstate__(self, state) -> None:
        if isinstance(state, dict):  # before this layout: River's quantiles pickled one by one
            self.__dict__.update(state)
            self.slots = [compact(slot) for slot in self.slots]
            return
        quantile, days, counts, lengths, values = state
        self.counts = counts.tolist()
        self.slots = []
        at = 0
        for n in lengths:
            slot = RollingQuantile(q=quantile, window_size=days)
            for x in values[at:at + n]:
                slot.update(x)
            at += n
            self.slots.append(slot)

    def learn(self, hour: int, mean_w: float) -> None:
        self.slots[hour].update(mean_w)
        self.counts[hour] += 1

    def usual_high(self, hour: int, min_count: int) -> float | None:
        """The highest usual high of this hour and its neighbours; None until this hour is learned."""
        if self.counts[hour] < min_count:
            return None
        return max(learned(self.slots[h % 24]) for h in (hour - 1, hour, hour + 1)
                   if self.counts[h % 24] >= min_count)


class HighConsumption:
    # Completed hours not yet learned: (end ts, local hour of day, mean W). A class default, so a
    # snapshot from before this queue loads with it empty.
    pending_hours: tuple[tuple[float, int, float], ...] = ()

    def __init__(self, settings: AnomalySettings) -> None:
        self.settings = settings
        self.profile = HourOfDayProfile(settings.high_quantile, settings.high_history_days)
        self.recent: dict[float, tuple[float, float]] = {}  # bucket -> (energy Wh, mean W), last hour
        self.recent_wh = 0.0
        self.last_ts: float | None = None
        self.hour_key: int | None = None
        self.hour_of_day = 0
        self.hour_wh = 0.0
        self.hour_cover_s = 0.0
        self.above_since: float | None = None  # since when the last hour has been over the usual high
        self.over_since: float | None = None  # since when it has been over the limit
        self.last_above: float | None = None  # last bucket whose own power was above it
        self.open_start: float | None = None
        self.open_usual = 0.0
        self.open_peak_wh = 0.0
        self.open_score = 0.0

    def add(self, subject: Subject, ts: float, energy_wh: float, mean_w: float) -> list[Anomaly]:
        if self.last_ts is not None and ts <= self.last_ts:
            self._amend(subject, ts, energy_wh, mean_w)
            return []
        gap = self.settings.window_s if self.last_ts is None else ts - self.last_ts
        self.last_ts = ts
        if gap > _MAX_COVER_S:
            # After a silence a counter's first delta holds the energy of the whole gap: only the
            # share of its last half hour belongs to the hour being judged.
            energy_wh *= _MAX_COVER_S / gap
        clock = subject.clock
        key = clock.hour_key(ts)
        if key != self.hour_key:
            self._finish_hour(ts)
            self.hour_key, self.hour_of_day = key, clock.hour_of_day(ts)
        self.hour_wh += energy_wh
        self.hour_cover_s += min(gap, _MAX_COVER_S)

        self.recent[ts] = (energy_wh, mean_w)
        self.recent_wh += energy_wh
        for old in [b for b in self.recent if b <= ts - HOUR]:
            self.recent_wh -= self.recent.pop(old)[0]
        last_hour_wh = self.recent_wh  # Wh over the last hour, numerically its mean power in W

        usual = self.profile.usual_high(self.hour_of_day, self.settings.high_warmup_hours)
        if usual is None:
            return []
        if mean_w > usual:
            self.last_above = ts
        if last_hour_wh > usual:
            if self.above_since is None:
                # The excess began where the minutes (or intervals) leading to now rose clearly
                # over the usual high (by half the margin: a quiet home hovers around it).
                self.above_since = ts
                clearly = usual + self.settings.high_margin_w / 2
                for bucket in reversed(self.recent):
                    if self.recent[bucket][1] <= clearly:
                        break
                    self.above_since = bucket
        else:
            self.above_since = None

        s = self.settings
        if self.open_start is None:
            limit = max(s.high_factor * usual, usual + s.high_margin_w)
            # Over the limit for an hour. The limit jumps at every clock hour (each hour of day has
            # its own usual high), so a dip of less than a fifth under it does not restart the count.
            if last_hour_wh <= s.high_hold_share * limit:
                self.over_since = None
                return []
            if self.over_since is None:
                if last_hour_wh <= limit:
                    return []
                self.over_since = ts
            if ts - self.over_since < s.high_persist_s or last_hour_wh <= limit:
                return []
            self.over_since = None
            self.open_start = self.above_since if self.above_since is not None else ts
            self._forget_since(self.open_start)
            self.open_usual, self.open_peak_wh = usual, last_hour_wh
            self.open_score = last_hour_wh / max(usual, 1.0)
            return [subject.anomaly(
                AnomalyKind.HIGH_CONSUMPTION, self.open_start, None, self.open_score,
                f"Your {subject.name} used {energy(last_hour_wh)} in the hour to "
                f"{subject.when(ts + s.window_s)}; at this time of day it usually uses under "
                f"{energy(usual)}.")]
        if last_hour_wh > self.open_peak_wh:
            self.open_peak_wh = last_hour_wh
            self.open_score = max(self.open_score, last_hour_wh / max(usual, 1.0))
        if last_hour_wh <= usual:
            return [self._close(subject, ts)]
        return []

    def _close(self, subject: Subject, ts: float) -> Anomaly:
        start = self.open_start
        assert start is not None  # closing an open anomaly
        end = self.last_above + self.settings.window_s if self.last_above is not None else ts
        end = max(end, start + self.settings.window_s)
        message = (f"Your {subject.name} used far more than usual from {subject.when(start)} to "
                   f"{subject.when(end, start)}: up to {energy(self.open_peak_wh)} in an hour, when "
                   f"it usually uses under {energy(self.open_usual)} at that time of day.")
        anomaly = subject.anomaly(AnomalyKind.HIGH_CONSUMPTION, start, end, self.open_score, message)
        self.open_start = None
        return anomaly

    def _amend(self, subject: Subject, ts: float, energy_wh: float, mean_w: float) -> None:
        """A re-emitted bucket (a late device minute corrected the total): fix the sums; nothing is
        learned or judged twice."""
        old = self.recent.get(ts)
        if old is None:
            return
        delta = energy_wh - old[0]
        self.recent[ts] = (energy_wh, mean_w)
        self.recent_wh += delta
        if subject.clock.hour_key(ts) == self.hour_key:
            self.hour_wh += delta

    def _finish_hour(self, now: float) -> None:
        if self.hour_key is None:
            return
        if self.hour_cover_s >= self.settings.high_min_coverage * HOUR and self._may_learn(now):
            self.pending_hours += ((now, self.hour_of_day, self.hour_wh * HOUR / self.hour_cover_s),)
        self.hour_wh = self.hour_cover_s = 0.0
        # An hour is learned once it is too old to become part of an anomaly: the excess that
        # opens one began up to an hour and ``high_persist_s`` before. Learned at once, a fault's
        # first hours (before it is confirmed) would lift this hour's usual high for four weeks and
        # hide the next fault at this time of day.
        settled = now - HOUR - self.settings.high_persist_s
        while self.pending_hours and self.pending_hours[0][0] <= settled:
            _, hour_of_day, mean_w = self.pending_hours[0]
            self.profile.learn(hour_of_day, mean_w)
            self.pending_hours = self.pending_hours[1:]

    def _forget_since(self, start: float) -> None:
        """An anomaly opened: the hours it covers are not this home's normal."""
        self.pending_hours = tuple(h for h in self.pending_hours if h[0] - HOUR < start)

    def _may_learn(self, now: float) -> bool:
        """An open anomaly pauses learning (it must not teach the profile that it is normal), for
        at most ``learn_pause_max_s``. Hours over the limit that never become an anomaly are
        learned: the profile's high quantile must see the home's real peaks, or it alerts on them."""
        return self.open_start is None or now - self.open_start > self.settings.learn_pause_max_s
