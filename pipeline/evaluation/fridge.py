"""A semi-synthetic fridge for homes whose data has none (REFIT and UK-DALE here have no fridge
channel), so DUTY_CYCLE_DRIFT can be measured on real homes.

The compressor is a two-state renewal process: on for about 14 minutes, off for about 26 (a 35 %
duty), each period drawn afresh with 15 % spread, the off periods a little shorter in summer. The
real home drives it: whenever its kettle or microwave switches on (someone is in the kitchen) the
door is opened, and a resting compressor starts after half the rest it had left. It is sampled at
the home's own reading times, so the home's real data holes are its holes too.

A drift sets another duty for a while (a door left ajar, a failing seal: up; a failing
compressor: down): the cycle keeps about its length and the on share becomes the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BASE_ON_S = 14 * 60.0
BASE_OFF_S = 26 * 60.0
ON_W = 85.0
START_W = 160.0  # the compressor's inrush, seen in the first sample of a cycle


@dataclass(frozen=True)
class Drift:
    start: float  # epoch s
    end: float
    duty: float  # the on share while it lasts


def simulate_fridge(ts_us: np.ndarray, door_opened: np.ndarray, drifts: list[Drift],
                    rng: np.random.Generator) -> np.ndarray:
    """The fridge's power (W) at each time stamp (epoch microseconds, increasing); ``door_opened``
    marks the time stamps at which the door is opened."""
    times = (ts_us / 1e6).tolist()
    kitchen = door_opened.tolist()
    out = np.zeros(len(times))
    drifts = sorted(drifts, key=lambda d: d.start)
    on = False
    switch_at = times[0] if times else 0.0
    cycle_start = True
    d = 0

    def duty_at(t: float) -> float | None:
        nonlocal d
        while d < len(drifts) and drifts[d].end <= t:
            d += 1
        if d < len(drifts) and drifts[d].start <= t:
            return drifts[d].duty
        return None

    def period(t: float, turning_on: bool) -> float:
        season = math.cos(2 * math.pi * ((t / 86400.0) % 365.25 - 200) / 365.25)  # 1 in mid-July
        on_s, off_s = BASE_ON_S, BASE_OFF_S * (1 - 0.08 * season)
        target = duty_at(t)
        if target is not None:
            cycle = (on_s + off_s) * (1 + (target - 0.35))
            on_s, off_s = target * cycle, (1 - target) * cycle
        mean = on_s if turning_on else off_s
        return max(60.0, rng.normal(mean, 0.15 * mean))

    for i, t in enumerate(times):
        while t >= switch_at:
            on = not on
            switch_at += period(switch_at, on)
            cycle_start = on
        if not on and kitchen[i]:
            switch_at = t + (switch_at - t) / 2  # warm air came in: it starts sooner
        if on:
            out[i] = START_W if cycle_start else ON_W + rng.normal(0, 2.0)
            cycle_start = False
    return out
