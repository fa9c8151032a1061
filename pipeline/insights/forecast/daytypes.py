"""Day types of a home's local calendar: working days, and days off (weekends and the public
holidays of the home's country, from the ``holidays`` package).

A public holiday is lived like a Sunday: people sleep in, cook at noon, stay home. Treated as a
working day it makes a bad profile for itself and, as an outlier among working days, a slightly
worse one for the days after it. The country (and region, whose holidays differ: Queensland's
are not New South Wales's) comes from the ``holiday_country`` setting, or else from the home's
time zone by the table below; a zone the table does not know gets weekends only.

The holiday tables are computed by the package (no download, no I/O) once per country and year
per process and shared by every home: they are not part of a home's state.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays
import numpy as np

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Time zone -> "CC" or "CC-SUBDIV" (ISO 3166). Zones that cover one country (or region) only.
_ZONE_COUNTRY = {
    "Australia/Brisbane": "AU-QLD", "Australia/Lindeman": "AU-QLD", "Australia/Sydney": "AU-NSW",
    "Australia/Melbourne": "AU-VIC", "Australia/Adelaide": "AU-SA", "Australia/Perth": "AU-WA",
    "Australia/Hobart": "AU-TAS", "Australia/Darwin": "AU-NT", "Australia/Canberra": "AU-ACT",
    "Europe/London": "GB-ENG", "Europe/Belfast": "GB-NIR", "Europe/Dublin": "IE",
    "Europe/Berlin": "DE", "Europe/Paris": "FR", "Europe/Madrid": "ES", "Europe/Rome": "IT",
    "Europe/Amsterdam": "NL", "Europe/Brussels": "BE", "Europe/Vienna": "AT", "Europe/Zurich": "CH",
    "Europe/Copenhagen": "DK", "Europe/Stockholm": "SE", "Europe/Oslo": "NO", "Europe/Helsinki": "FI",
    "Europe/Warsaw": "PL", "Europe/Prague": "CZ", "Europe/Lisbon": "PT", "Europe/Athens": "GR",
    "Pacific/Auckland": "NZ", "Asia/Tokyo": "JP", "Asia/Singapore": "SG",
}


def country_of(timezone: str, setting: str = "") -> str:
    """The holiday country code of a home: the setting if given ("none": weekends only), else
    the time zone's ("" when the table does not know it)."""
    if setting:
        return "" if setting.lower() == "none" else setting
    return _ZONE_COUNTRY.get(timezone, "")


def check_country(code: str) -> None:
    """Raise ``ValueError`` for a country or region the holidays package does not know."""
    if code and code.lower() != "none":
        _holiday_days(code, 2020)


@lru_cache(maxsize=256)
def _holiday_days(code: str, year: int) -> frozenset[int]:
    country, _, subdiv = code.partition("-")
    try:
        table = holidays.country_holidays(country.upper(), subdiv=subdiv.upper() or None, years=year)
    except (NotImplementedError, KeyError) as e:
        raise ValueError(f"unknown holiday country {code!r}") from e
    return frozenset(d.toordinal() - _EPOCH_ORDINAL for d in table)


class DayTypes:
    """Days off of one country, by local day number (days since 1970-01-01 local)."""

    __slots__ = ("code",)

    def __init__(self, code: str) -> None:
        self.code = code

    def off(self, days: np.ndarray) -> np.ndarray:
        """True where the local day is a Saturday, a Sunday or a public holiday."""
        days = np.asarray(days, dtype=np.int64)
        weekend = (days + 3) % 7 >= 5
        if not self.code or days.size == 0:
            return weekend
        lo, hi = int(days.min()), int(days.max())
        first, last = date.fromordinal(lo + _EPOCH_ORDINAL).year, date.fromordinal(hi + _EPOCH_ORDINAL).year
        found = [d for y in range(first, last + 1) for d in _holiday_days(self.code, y)]
        if not found:
            return weekend
        return weekend | np.isin(days, np.array(found, dtype=np.int64))
