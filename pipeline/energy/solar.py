"""A PV forecast from the sun's position: a clear-sky shape, scaled by what the array yielded.

Without a forecast service (nothing may be downloaded at run time) the best free guess of
tomorrow's PV is the shape of a clear day at the home's latitude, scaled by how much of a clear
day's energy the array actually delivered over its recent days (cloud, shading, orientation and
soiling all end up in that one ratio). Clear-sky irradiance is Haurwitz's model (global horizontal
irradiance from the solar zenith angle alone), the sun's position the NOAA approximations; both
are accurate to a few percent, well inside the day-to-day weather this ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

# Share of nameplate output a real array delivers under 1,000 W/m2 (inverter, temperature,
# cabling losses): the usual planning figure; a measured scale replaces it.
DEFAULT_PERFORMANCE_RATIO = 0.8
_SAMPLES_PER_SLOT = 6


def solar_zenith_cos(ts: datetime, latitude: float, longitude: float) -> float:
    """Cosine of the solar zenith angle at ``ts`` (aware) for a place (degrees, east positive)."""
    utc = ts.timestamp()
    day_of_year = datetime.fromtimestamp(utc, timezone.utc).timetuple().tm_yday
    hours = (utc % 86400) / 3600.0
    gamma = 2 * math.pi / 365 * (day_of_year - 1 + (hours - 12) / 24)
    declination = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
                   - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
                   - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma))
    equation_of_time = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                                 - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    solar_minutes = hours * 60 + equation_of_time + 4 * longitude
    hour_angle = math.radians(solar_minutes / 4 - 180)
    lat = math.radians(latitude)
    return (math.sin(lat) * math.sin(declination)
            + math.cos(lat) * math.cos(declination) * math.cos(hour_angle))


def clear_sky_ghi(ts: datetime, latitude: float, longitude: float) -> float:
    """Haurwitz clear-sky global horizontal irradiance (W/m2)."""
    cos_z = solar_zenith_cos(ts, latitude, longitude)
    if cos_z <= 0.01:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.057 / cos_z)


def clear_sky_pv_w(start: datetime, slot: timedelta, slots: int, kwp: float, latitude: float,
                   longitude: float, performance_ratio: float = DEFAULT_PERFORMANCE_RATIO) -> tuple[float, ...]:
    """Mean PV output (W) per slot of a ``kwp`` array on a clear day."""
    if not (math.isfinite(kwp) and kwp >= 0):
        raise ValueError(f"PV peak power must be a non-negative number of kWp, not {kwp}")
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise ValueError(f"no such place: latitude {latitude}, longitude {longitude}")
    step = slot / _SAMPLES_PER_SLOT
    out = []
    for i in range(slots):
        t0 = start + slot * i
        mean_ghi = sum(clear_sky_ghi(t0 + step * (k + 0.5), latitude, longitude)
                       for k in range(_SAMPLES_PER_SLOT)) / _SAMPLES_PER_SLOT
        out.append(kwp * mean_ghi * performance_ratio)  # kWp x W/m2 / (1 kW/m2) x 1000 W/kW
    return tuple(out)


def yield_scale(observed_wh: Sequence[float], clear_sky_wh: Sequence[float]) -> float:
    """How much of a clear day's energy the array delivered over matching periods (0..1.5).

    Periods with no clear-sky energy (night) say nothing and are skipped; the ratio is of sums, so
    a dull day weighs what it yielded, not one vote.
    """
    pairs = [(o, c) for o, c in zip(observed_wh, clear_sky_wh, strict=True) if c > 0]
    clear = sum(c for _, c in pairs)
    if clear <= 0:
        raise ValueError("no daylight in the history given: cannot scale a PV forecast from it")
    return min(1.5, max(0.0, sum(max(0.0, o) for o, _ in pairs) / clear))
