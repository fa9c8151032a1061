"""Notification targets are Apprise URLs (``mailto://user:pass@host``, ``ntfy://topic``,
``tgram://bottoken/chat``, ``json://host/path`` ...). Their tokens and passwords are secrets: the
store keeps the URL as given (Apprise needs it whole), logs and the viewer show only
``masked_target``."""

from __future__ import annotations

import re

MAX_TARGET_CHARS = 2048
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://(.+)$", re.DOTALL)


def check_target(url: str) -> str:
    """The URL stripped, or ValueError: a scheme:// and something after it, one line, bounded.
    Whether Apprise knows the scheme is checked at the edge (it owns the list)."""
    url = url.strip()
    if not url:
        raise ValueError("a target URL is empty")
    if len(url) > MAX_TARGET_CHARS or any(c in url for c in "\r\n\t"):
        raise ValueError(f"a target URL is one line of at most {MAX_TARGET_CHARS} characters")
    if not _SCHEME.match(url):
        raise ValueError("a target URL looks like scheme://..., e.g. mailto://user:pass@example.com")
    return url


def masked_target(url: str) -> str:
    """What may be shown of a target: its scheme and its last four characters, nothing between
    (in most Apprise URLs everything after the scheme is a token, a password or an address)."""
    match = _SCHEME.match(url.strip())
    if not match:
        return "***"
    rest = match[2]
    tail = rest[-4:] if len(rest) > 12 else ""
    return f"{match[1].lower()}://***{tail}"
