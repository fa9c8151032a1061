"""One device's next run as a plan: what the viewer stores when a homeowner accepts a load-shift
recommendation or asks for "cheapest before HH:MM" on a device.

* ``typical_run``: how long the device usually runs and what it draws meanwhile, from its
  1-minute means (runs are minutes above ``on_w``, gaps of up to ``join_gap`` inside one run).
* ``cheapest_before``: the run planned into the cheapest window from the next slot up to the next
  HH:MM (local) that leaves time for it, with the home's prices, by the deferrable-load MILP (``optimize``). Its commands
  (``plan_commands``) hold the device off from the plan's start (the owner arms it now), switch it
  on at the chosen start and off when the run is done.
* ``run_at``: the run at a given local time (a load-shift recommendation's "at about HH:MM", its
  next occurrence): on at that time, off after the run; nothing is sent before.

Pure: prices come in as a function of (start, end, slot) -> (import, export) per slot.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from pipeline.energy.optimize import DeferrableLoad, Plan, PlanProblem, optimize

Prices = Callable[[datetime, datetime, timedelta], tuple[tuple[float, ...], tuple[float, ...]]]
SLOT = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class TypicalRun:
    power_w: float  # the median run's mean power
    duration: timedelta  # the median run's length, whole minutes
    runs: int  # how many runs it was learned from

    def describe(self) -> str:
        minutes = round(self.duration / timedelta(minutes=1))
        length = f"{minutes} min" if minutes < 60 else f"{minutes / 60:.1f} h"
        return f"about {length} at {self.power_w:,.0f} W (typical of {self.runs} runs)"


def typical_run(buckets: Sequence[datetime], mean_w: Sequence[float], on_w: float = 20.0,
                join_gap: timedelta = timedelta(minutes=5)) -> TypicalRun | None:
    """The device's usual run from its 1-minute windows (bucket, mean W), in time order; None
    when it never ran."""
    runs: list[tuple[datetime, datetime, float]] = []  # first minute, last minute, energy (W-min)
    for t, w in zip(buckets, mean_w):
        if w is None or w <= on_w:
            continue
        if runs and t - runs[-1][1] <= join_gap:
            first, _, energy = runs[-1]
            runs[-1] = (first, t, energy + w)
        else:
            runs.append((t, t, w))
    if not runs:
        return None
    lengths = [(last - first) / timedelta(minutes=1) + 1 for first, last, _ in runs]
    powers = [energy / n for (_, _, energy), n in zip(runs, lengths)]
    minutes = max(1, math.ceil(statistics.median(lengths)))
    return TypicalRun(float(statistics.median(powers)), timedelta(minutes=minutes), len(runs))


def next_local(after: datetime, at: time, tz: str) -> datetime:
    """The first local ``at`` (wall time in ``tz``) after ``after``, in UTC; a time skipped by a
    clock change moves to the next day that has it."""
    zone = ZoneInfo(tz)
    day = after.astimezone(zone).date()
    for offset in range(3):
        utc = datetime.combine(day + timedelta(days=offset), at, zone).astimezone(timezone.utc)
        if utc.astimezone(zone).time() != at:  # fell in a spring-forward gap
            continue
        if utc > after:
            return utc
    raise ValueError(f"no {at:%H:%M} in {tz} in the next days")


def parse_hhmm(text: str) -> time:
    m = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    return time(int(m.group(1)), int(m.group(2)))


def recommended_start(title: str) -> time | None:
    """The start a load-shift recommendation names ("Run the dishwasher at about 22:15")."""
    m = re.search(r"\bat about ([0-2]?\d:[0-5]\d)\b", title)
    if not m:
        return None
    try:
        return parse_hhmm(m.group(1))
    except ValueError:
        return None


def slot_after(now: datetime, slot: timedelta) -> datetime:
    """The start of the next whole slot after ``now`` (UTC grid)."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    n = math.floor((now - epoch) / slot) + 1
    return epoch + slot * n


def _problem(device: str, run: TypicalRun, start: datetime, earliest: datetime, deadline: datetime,
             prices: Prices, currency: str, tz: str, slot: timedelta) -> PlanProblem:
    n = math.ceil((deadline - start) / slot - 1e-9)
    imp, exp = prices(start, start + slot * n, slot)
    load = DeferrableLoad(device, run.power_w, run.duration, earliest, deadline)
    return PlanProblem(start, slot, tuple(imp), (0.0,) * n, (load,), tuple(exp), None, currency, tz)


def cheapest_before(device: str, run: TypicalRun, now: datetime, before: time, tz: str,
                    prices: Prices, currency: str = "", slot: timedelta = SLOT) -> tuple[PlanProblem, Plan]:
    """The device's next run in the cheapest window from the next slot to the next local
    ``before`` that leaves time for the run (at 06:30 "before 07:00" for a 2-hour run is
    tomorrow's 07:00)."""
    start = slot_after(now, slot)
    deadline = next_local(start, before, tz)
    if deadline - start < run.duration:
        deadline = next_local(deadline, before, tz)
    problem = _problem(device, run, start, start, deadline, prices, currency, tz, slot)
    return problem, optimize(problem)


def run_at(device: str, run: TypicalRun, now: datetime, at: time, tz: str, prices: Prices,
           currency: str = "", slot: timedelta = SLOT) -> tuple[PlanProblem, Plan]:
    """The device's next run at the next local ``at`` (rounded to the slot grid): on then, off
    after ``run.duration``."""
    wanted = next_local(now, at, tz)
    epoch = datetime(1970, 1, 1, tzinfo=wanted.tzinfo)
    start = epoch + slot * round((wanted - epoch) / slot)
    if start <= now:
        start += slot
    # The window is exactly the run, rounded up to whole slots: the MILP has one choice.
    end = start + slot * math.ceil(run.duration / slot - 1e-9)
    problem = _problem(device, run, start, start, end, prices, currency, tz, slot)
    return problem, optimize(problem)
