"""Run-time configuration of the ingest flow, built from CLI flags or SHEMS_* environment variables."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pipeline.settings import FloodSettings, ValidationSettings, WindowSettings

# The defaults every entry point shares (the CLI's flags, the viewer's settings, the demo).
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_STORE_URL = "sqlite:///.shems/shems.db"

# ----- store URLs: sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host/db -----

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def store_kind(url: str) -> str | None:
    """"sqlite", "postgres", or None for a URL no store takes."""
    if url.startswith("sqlite://"):
        return "sqlite"
    if url.startswith(POSTGRES_PREFIXES):
        return "postgres"
    return None


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL ("" when it names none)."""
    return url[len(SQLITE_PREFIX):]


def check_store_url(url: str) -> str:
    """The URL if a store takes it, else ValueError with a sentence a user can act on."""
    kind = store_kind(url)
    if kind == "sqlite" and (not url.startswith(SQLITE_PREFIX) or not sqlite_path(url)):
        raise ValueError("SQLite URL needs a path: sqlite:///relative.db or sqlite:////absolute/path.db")
    if kind is None:
        raise ValueError(
            f"unsupported store URL scheme in {url.split('://')[0]!r}: use sqlite:///path.db or postgresql://..."
        )
    return url


# TLS files ride in the MQTT URL's query (``mqtts://host:8883?ca_file=/etc/ca.crt``) so every
# command, the flow's source and the viewer's command sender get them from the one URL they
# already take; the --mqtt-ca-file/--mqtt-cert-file/--mqtt-key-file flags write them there.
MQTT_TLS_PARAMS = ("ca_file", "cert_file", "key_file")


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # repr=False: never in logs
    tls: bool = False
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate (brokers with require_certificate)
    key_file: str | None = None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """The client side of TLS: the broker's certificate must chain to the CA and name the host
        we dialled (no opt-out: a broker worth encrypting to is worth authenticating)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def configure(self, client) -> None:
        """Credentials and TLS on a paho client, the same way for every shems client."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        context = self.tls_context()
        if context is not None:
            client.tls_set_context(context)


_HOST = re.compile(r"[A-Za-z0-9._:%-]+")


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """``mqtt://user:pass@host:port`` (``mqtts://`` for TLS, with ``?ca_file=&cert_file=&key_file=``)
    to an endpoint; ValueError if malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise ValueError("MQTT URL has no host, expected mqtt://[user:pass@]host[:port]")
    if not _HOST.fullmatch(parts.hostname):
        # A name, an IPv4 or an [IPv6] address; 'ho st' was tried for the whole startup timeout.
        raise ValueError(f"MQTT URL has an invalid host {parts.hostname!r} (a name, an IPv4 or an [IPv6] address; "
                         "an international name in its xn-- form)")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"MQTT URL has an invalid port: {exc}") from None
    files: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in MQTT_TLS_PARAMS:
            raise ValueError(f"unknown MQTT URL parameter {key!r}: expected {', '.join(MQTT_TLS_PARAMS)}")
        if not tls:
            raise ValueError(f"MQTT URL parameter {key!r} needs TLS: use mqtts://")
        if not Path(value).is_file():
            raise ValueError(f"MQTT URL parameter {key}: no such file: {value}")
        files[key] = value
    if ("cert_file" in files) != ("key_file" in files):
        raise ValueError("MQTT URL: a client certificate needs both cert_file and key_file")
    return MqttEndpoint(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        **files,
    )


def with_query(url: str, **params: str) -> str:
    """The URL with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items()]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def with_password(url: str, password: str) -> str:
    """The URL with this password in its user info (percent-encoded), replacing any there."""
    parts = urlsplit(url)
    if "@" not in parts.netloc or not parts.username:
        raise ValueError("a password file needs a user name in the URL (scheme://user@host/...)")
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Everything `shems run` needs; the defaults are the embedded ones."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    store_url: str = "sqlite:///.shems/shems.db"
    registry_path: Path | None = None
    topic_prefix: str = ""  # prepended to every subscription and stripped before decoding
    # MQTT 5 shared subscription group: workers and processes with the same group split the load.
    share_group: str | None = "shems"
    client_id_prefix: str = "shems-ingest"
    qos: int = 1
    session_expiry_s: int = 7 * 24 * 3600  # the broker keeps our queue this long while we are down
    idle_exit_s: float | None = None
    metrics_port: int | None = None
    recovery_dir: Path | None = None
    workers: int = 1
    process_id: int | None = None
    addresses: tuple[str, ...] = ()
    batch_rows: int = 20_000  # large: the device upsert and the commit are per batch
    flush_interval_s: float = 0.5
    epoch_interval_s: float = 5.0
    window: WindowSettings = field(default_factory=WindowSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    flood: FloodSettings = field(default_factory=FloodSettings)  # per device (pipeline/ingest/flood.py)
    tariffs_path: Path | None = None  # tariff book TOML (pipeline/tariff.py); stored on start
    timezone: str = "UTC"  # a home's local time zone when the registry names none
    insights: bool = True  # forecasts, anomalies and recommendations per home
    # Received messages waiting in memory for the flow, per worker; beyond it the source stops
    # acknowledging and the broker queues (flows/mqtt_source.py).
    max_buffered_messages: int = 100_000
    # At start, how long the store and the broker each get to answer before the flow gives up.
    startup_timeout_s: float = 12.0
    # Home Assistant MQTT discovery and states (flows/home_assistant.py); None: off.
    ha_prefix: str | None = None
    # The MQTT client in a process of its own per worker (flows/mqtt_process.py); False: in the
    # flow's process (`shems run --mqtt-in-process`).
    mqtt_process: bool = True

    @property
    def consumers(self) -> int:
        """Bytewax workers in the whole cluster: MQTT subscribers, recovery and sink partitions."""
        return self.workers * max(1, len(self.addresses))
