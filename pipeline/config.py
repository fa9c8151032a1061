"""Run-time configuration of the ingest flow, built from CLI flags or SHEMS_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.settings import ValidationSettings, WindowSettings


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # repr=False: never in logs
    tls: bool = False

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """``mqtt://user:pass@host:port`` (``mqtts://`` for TLS) to an endpoint; ValueError if malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise ValueError("MQTT URL has no host, expected mqtt://[user:pass@]host[:port]")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"MQTT URL has an invalid port: {exc}") from None
    return MqttEndpoint(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


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
    batch_rows: int = 5000
    flush_interval_s: float = 0.5
    epoch_interval_s: float = 5.0
    window: WindowSettings = field(default_factory=WindowSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    tariffs_path: Path | None = None  # tariff book TOML (pipeline/tariff.py); stored on start
    timezone: str = "UTC"  # a home's local time zone when the registry names none
    insights: bool = True  # forecasts, anomalies and recommendations per home
    # Received messages waiting in memory for the flow, per worker; beyond it the source stops
    # acknowledging and the broker queues (flows/mqtt_source.py).
    max_buffered_messages: int = 100_000
    # At start, how long the store and the broker each get to answer before the flow gives up.
    startup_timeout_s: float = 12.0

    @property
    def consumers(self) -> int:
        """Bytewax workers in the whole cluster: MQTT subscribers, recovery and sink partitions."""
        return self.workers * max(1, len(self.addresses))
