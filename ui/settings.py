"""The viewer's settings, read from ``SHEMS_*`` environment variables (``shems ui`` sets them from
its flags, so the Streamlit script, which takes no arguments of its own, sees them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from pipeline.config import DEFAULT_MQTT_URL, DEFAULT_STORE_URL


@dataclass(frozen=True, slots=True)
class ViewerSettings:
    store_url: str = DEFAULT_STORE_URL
    mqtt_url: str = DEFAULT_MQTT_URL
    topic_prefix: str = ""
    # Sessions end after this long without a page the user asked for (auto-refresh does not
    # count), and in any case this long after signing in.
    session_idle_s: float = 30 * 60
    session_max_s: float = 12 * 3600
    # Sign-in throttling (ui/accounts.py). Failures count within the window. From one client
    # address: this many are free, then each try waits twice as long as the one before since that
    # address's last failure (1 s, 2 s, 4 s ...), up to the cap. For one user name from anywhere:
    # the same, with its own free count and a short cap, and not for an address this user signed
    # in from before, so nobody can lock a user out.
    signin_window_s: float = 3600.0
    signin_first_delay_s: float = 1.0  # the first wait; each further failure doubles it
    signin_client_free_failures: int = 5
    signin_client_max_delay_s: float = 300.0
    signin_name_free_failures: int = 10
    signin_name_max_delay_s: float = 30.0
    signin_known_client_days: float = 30.0
    # Key of the HMAC that stands in for a user name nobody has (a password typed in the name
    # field must not be stored); SHEMS_UI_SIGNIN_KEY or SHEMS_UI_SIGNIN_KEY_FILE. Without one,
    # each viewer process draws its own.
    signin_key: str = field(default="", repr=False)
    # Device commands per user per minute.
    commands_per_minute: int = 6
    ack_timeout_s: float = 10.0
    # A device switched off that still draws more than this is reported.
    off_threshold_w: float = 5.0
    # The live page calls data stale when the newest reading is older than this.
    stale_after_s: float = 120.0
    live_refresh_s: float = 5.0
    # A meter silent this long is listed on the fleet page.
    silent_after_s: float = 600.0
    # Used when there is no tariff in the store (see ui/cost.py).
    flat_price_per_kwh: float = 0.28
    currency: str = "GBP"
    timezone: str = "UTC"
    # Money and durations in this locale (e.g. en_GB, de_DE); empty: the browser's language.
    locale: str = ""
    # A home whose newest reading is older than this opens on its own newest data (an imported
    # history), not on the wall clock, and the pages say how old it is.
    history_after_s: float = 6 * 3600.0
    metrics_port: int = 0  # Prometheus metrics of the viewer's server (ui/metrics.py); 0: off

    @property
    def session_idle(self) -> timedelta:
        return timedelta(seconds=self.session_idle_s)

    @property
    def session_max(self) -> timedelta:
        return timedelta(seconds=self.session_max_s)


_ENV = {
    "store_url": "SHEMS_STORE_URL",
    "mqtt_url": "SHEMS_MQTT_URL",
    "topic_prefix": "SHEMS_TOPIC_PREFIX",
}


_SECRETS = {"signin_key"}  # may also come from a file named by <VARIABLE>_FILE (Docker secrets)


def env_name(field_name: str) -> str:
    return _ENV.get(field_name, "SHEMS_UI_" + field_name.upper())


def load_settings(environ: dict[str, str] | None = None) -> ViewerSettings:
    """Settings from the environment; a malformed number raises ValueError naming the variable."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(ViewerSettings):
        name = env_name(f.name)
        if name not in environ and f.name in _SECRETS and name + "_FILE" in environ:
            path = environ[name + "_FILE"]
            try:
                with open(path, encoding="utf-8") as secret:
                    values[f.name] = secret.read().strip()
            except OSError as exc:
                raise ValueError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
            continue
        if name not in environ:
            continue
        raw = environ[name]
        kind: type[Any] = type(f.default)
        try:
            values[f.name] = kind(raw) if kind is not str else raw
        except ValueError:
            raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    return ViewerSettings(**values)
