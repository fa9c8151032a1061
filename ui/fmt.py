"""Words and numbers as the homeowner reads them: money in the currency's symbol and the user's
locale, durations as "3 days ago", plurals, times of day as HH:MM. Babel does the locale work
(CLDR data: symbols, separators, plural rules, unit names) so the pages never hand-build them.

Pure functions: the locale is passed in (``ui.common.user_locale`` picks it per browser)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from babel import Locale, UnknownLocaleError
from babel.dates import format_timedelta
from babel.numbers import format_currency, format_decimal, get_currency_precision, get_currency_symbol

DEFAULT_LOCALE = "en_GB"
NONE = "—"  # what a missing value reads as, never "None"


def locale(tag: str | None, fallback: str = DEFAULT_LOCALE) -> str:
    """A Babel locale name from a browser tag ("en-US", "de") or a setting; the fallback when it
    is missing or unknown."""
    if not tag:
        return fallback
    try:
        return str(Locale.parse(tag.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return fallback


def money(amount: float | None, currency: str, loc: str = DEFAULT_LOCALE, *, digits: int = 2) -> str:
    """``£6.24``, ``6,24 €``; a currency Babel does not know keeps its code."""
    if amount is None:
        return NONE
    pattern = None if digits == 2 else "¤#,##0"
    # digits=2 means the currency's own (JPY has none): a zero is judged at what is shown.
    amount = _unsigned_zero(amount, get_currency_precision(currency) if digits == 2 else digits)
    try:
        return format_currency(amount, currency, format=pattern, locale=loc,
                               currency_digits=digits == 2)
    except (ValueError, TypeError):
        return f"{amount:,.{digits}f} {currency}"


def currency_symbol(currency: str, loc: str = DEFAULT_LOCALE) -> str:
    try:
        return get_currency_symbol(currency, locale=loc)
    except (ValueError, TypeError):
        return currency


def money_in_text(text: str, currency: str, loc: str = DEFAULT_LOCALE) -> str:
    """Amounts the pipeline wrote as "6.24 GBP" (its texts are locale-free) as "£6.24"; prices
    per kWh keep their digits ("0.233 GBP/kWh" -> "£0.233/kWh")."""
    code = re.escape(currency)
    symbol = currency_symbol(currency, loc)
    text = re.sub(rf"(-?\d[\d,]*(?:\.\d+)?) {code}/kWh", lambda m: f"{symbol}{m[1]}/kWh", text)
    return re.sub(rf"(-?\d[\d,]*(?:\.\d+)?) {code}\b",
                  lambda m: money(float(m[1].replace(",", "")), currency, loc), text)


def number(value: float | None, loc: str = DEFAULT_LOCALE, digits: int = 1) -> str:
    if value is None:
        return NONE
    return format_decimal(_unsigned_zero(value, digits), format="#,##0." + "0" * digits if digits else "#,##0",
                          locale=loc)


def _unsigned_zero(value: float, digits: int) -> float:
    """The value rounded as shown, a zero without its sign: an export of 0.3 W or a refund of a
    tenth of a penny read "-0 W" and "-£0.00"."""
    return round(value, digits) + 0.0  # -0.0 + 0.0 is 0.0


def ago(when: datetime, now: datetime, loc: str = DEFAULT_LOCALE) -> str:
    """"3 days ago", "in 2 hours", "now" (under a minute)."""
    delta = when - now
    if abs(delta) < timedelta(minutes=1):
        return "just now"
    return format_timedelta(delta, add_direction=True, locale=loc, threshold=1.1)


def duration(span: timedelta, loc: str = DEFAULT_LOCALE) -> str:
    """"11 years", "3 days", "40 minutes"."""
    return format_timedelta(span, locale=loc, threshold=1.1)


def plural(n: int, one: str, many: str | None = None) -> str:
    """"1 home", "2 homes"."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def hhmm(hour: int, minute: int = 0) -> str:
    return f"{hour:02d}:{minute:02d}"


def label(device_id: str | None) -> str:
    """A device id as a name: "washing_machine" -> "washing machine"; the home's own total (no
    device) reads "whole home"."""
    if not device_id:
        return "whole home"
    return device_id.replace("_", " ")
