"""Structured logging: JSON lines when not on a terminal, readable key=value on one.

Secrets never reach a log: URLs are passed through ``sinks.base.mask_url`` before logging, and
the processors below mask any ``password`` key and any password inside a URL or a libpq
connection string that slips through in any logged string.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

_SECRET_KEYS = {"password", "passwd", "secret", "token"}


# The password of scheme://user:password@host: everything up to the last "@" before the host, as
# urlsplit reads it (a password may hold ":" or "/"; "@" must be percent-encoded).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)(?P<secret>[^\s@]*)@")
# key=value pairs whose key names a secret: URL query parameters (?password=, &sslpassword=) and
# libpq keyword strings ("host=db password=x"); a quoted libpq value may hold spaces.
_SECRET_PARAM = re.compile(
    r"(?P<head>(?:^|(?<=[?&;\s,(\"']))(?:ssl)?(?:password|passwd|pass|pwd|secret|token|api_?key)\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'|[^&;\s#\"']*)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """The text with every password in a URL (user info or query) or a key=value pair replaced."""
    if "=" not in text and "@" not in text:
        return text
    text = _USERINFO.sub(lambda m: m["head"] + "***@", text)
    return _SECRET_PARAM.sub(lambda m: m["head"] + ("***" if m["secret"] else ""), text)


def _mask(value):
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, (list, tuple, set)):
        return type(value)(_mask(v) for v in value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


def _drop_secrets(_logger, _name, event_dict):
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _mask(event_dict[key])
    return event_dict


def configure(level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog once for the process."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str):
    return structlog.get_logger(name)
