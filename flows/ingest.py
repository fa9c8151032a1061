"""The ingest dataflow, top to bottom as the data path:

    MQTT source -> decode (per physical device) -> readings | dead letters | command acks
    readings -> device 1-minute windows (per device) -> home totals (per home)
    device and home windows -> forecast, detect, recommend (per home)
    readings, windows, late readings, home totals, insights, dead letters -> store (batched,
    idempotent)

Every step is a pure function or a pure state object from ``pipeline``, grouped into composite
operators with typed outputs (flows/operators.py); this module only wires them to the MQTT source
and the store and runs them on Bytewax.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from flows import snapshot_compat
from flows.fatal import describe, exit_now
from flows.home_assistant import HaSetup, HomeAssistantSink, home_assistant_states
from flows.operators import MOVED_STEPS, InsightsSetup, aggregate, decode_messages, derive_insights
from pipeline.config import IngestConfig, parse_mqtt_url
from pipeline.energy.tariff import TariffBook, book_from_toml
from pipeline.ha.discovery import Topics
from pipeline.ingest.decode import subscriptions
from pipeline.ingest.registry import Registry
from pipeline.logs import get_logger
from pipeline.records import DeadLetter, DeviceKind, Reading, Tick
from pipeline.settings import FloodSettings, WindowSettings
from sinks.base import mask_url
from sinks.stores import open_store
from sinks.writer import RecoverableStoreSink, StoreSink, sink_key

log = get_logger(__name__)

FLOW_ID = "shems_ingest"  # recovery snapshots are filed under step ids that start with it


class StartupError(Exception):
    """The flow cannot start (store or broker unreachable, refused credentials): one line, exit 1."""


def meter_homes(registry: Registry) -> frozenset[str]:
    return frozenset(e.home_id for e in registry.entries() if e.kind == DeviceKind.METER)


def aggregate_and_store(
    readings: Stream[Reading],
    side: Sequence[Stream],
    *,
    store_url: str,
    window: WindowSettings,
    meter_home_ids: frozenset[str],
    flush_on_eof: Callable[[], bool],
    batch_rows: int,
    flush_interval_s: float,
    recoverable_partitions: int | None = None,
    insights: InsightsSetup | None = None,
    exit_on_sink_error: bool = False,
    home_assistant: HaSetup | None = None,
    flood: FloodSettings | None = None,
) -> None:
    """Windows readings per device, totals them per home, forecasts, detects and recommends per
    home, and sends everything to the store. With ``exit_on_sink_error`` (the long-running flow)
    an error the sink raises ends the process with one line (flows/fatal.py); without it (imports
    run in-process too) it propagates to the caller."""
    snapshots = bool(recoverable_partitions)  # without recovery no snapshot is ever read
    windows = aggregate("aggregate", readings, window, meter_home_ids, flush_on_eof, snapshots, flood)
    found: list[Stream] = []
    derived = None
    if insights is not None:
        insights = replace(insights, snapshots=snapshots)
        derived = derive_insights("derive_insights", windows.device_windows, windows.home_windows, insights)
        found += [derived.insights, derived.dead_letters]
    if home_assistant is not None:
        ha = home_assistant_states("home_assistant", windows.home_windows,
                                   derived.insights if derived is not None else None, home_assistant)
        op.output("ha_publish", ha.updates, HomeAssistantSink(home_assistant))
        found.append(ha.dead_letters)
    to_store = op.merge("to_store", windows.admitted, windows.device_windows, windows.late, windows.home_windows,
                        windows.dead_letters, *found, *side)
    if recoverable_partitions:
        keyed = op.key_on("sink_key", to_store, sink_key)
        partitioned: FixedPartitionedSink = RecoverableStoreSink(
            store_url, recoverable_partitions, batch_rows, flush_interval_s)
        if exit_on_sink_error:
            partitioned = ExitOnErrorPartitionedSink(partitioned, store_url)
        op.output("store", keyed, partitioned)
    else:
        dynamic: DynamicSink = StoreSink(store_url, batch_rows, flush_interval_s)
        if exit_on_sink_error:
            dynamic = ExitOnErrorSink(dynamic, store_url)
        op.output("store", to_store, dynamic)


class _ExitOnErrorPartition(StatelessSinkPartition):
    def __init__(self, inner, where: str) -> None:
        self.inner, self.where = inner, where

    def write_batch(self, items) -> None:
        _or_exit(self.where, lambda: self.inner.write_batch(items))

    def close(self) -> None:
        _or_exit(self.where, self.inner.close)


class _ExitOnErrorStatefulPartition(StatefulSinkPartition):
    def __init__(self, inner, where: str) -> None:
        self.inner, self.where = inner, where

    def write_batch(self, items) -> None:
        _or_exit(self.where, lambda: self.inner.write_batch(items))

    def snapshot(self):
        return _or_exit(self.where, self.inner.snapshot)

    def close(self) -> None:
        _or_exit(self.where, self.inner.close)


def _or_exit(where: str, call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - what the sink does not handle is not about one record
        exit_now("store", f"{where}: {describe(exc)}")


class ExitOnErrorSink(DynamicSink):
    """The store sink, ending the process with one line (flows/fatal.py) for an error it raises:
    the sink retries outages and isolates bad rows itself, so what reaches here is fatal."""

    def __init__(self, inner: DynamicSink, store_url: str) -> None:
        self.inner = inner
        self.where = f"the store {mask_url(store_url)} failed"

    def build(self, step_id: str, worker_index: int, worker_count: int):
        part = _or_exit(self.where, lambda: self.inner.build(step_id, worker_index, worker_count))
        return _ExitOnErrorPartition(part, self.where)


class ExitOnErrorPartitionedSink(FixedPartitionedSink):
    """:class:`ExitOnErrorSink` for the recoverable (partitioned) store sink."""

    def __init__(self, inner: FixedPartitionedSink, store_url: str) -> None:
        self.inner = inner
        self.where = f"the store {mask_url(store_url)} failed"

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def part_fn(self, item_key: str) -> int:
        return self.inner.part_fn(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state):
        part = _or_exit(self.where, lambda: self.inner.build_part(step_id, for_part, resume_state))
        return _ExitOnErrorStatefulPartition(part, self.where)


def build_flow(
    cfg: IngestConfig, source: Source, registry: Registry, *,
    flush_on_eof: Callable[[], bool] = lambda: True,
    recoverable_partitions: int | None = None,
    book: TariffBook | None = None,
) -> Dataflow:
    """The MQTT ingest flow over any source of RawMessage and Tick records."""
    flow = Dataflow(FLOW_ID)
    incoming = op.input("mqtt", flow, source)
    tick_split = op.branch("tick_or_message", incoming, lambda x: isinstance(x, Tick))
    ticks, received = tick_split.trues, tick_split.falses
    # The spooled source dead-letters a message that crashed the process before (flows/spool.py).
    crashed_split = op.branch("crashed_or_message", received, lambda x: isinstance(x, DeadLetter))
    crashed, messages = crashed_split.trues, crashed_split.falses
    decoded = decode_messages("decode_messages", messages, registry, cfg.validation,
                              snapshots=recoverable_partitions is not None)
    aggregate_and_store(
        decoded.readings,
        [decoded.dead_letters, decoded.acks, crashed, ticks],
        store_url=cfg.store_url,
        window=cfg.window,
        meter_home_ids=meter_homes(registry),
        flush_on_eof=flush_on_eof,
        batch_rows=cfg.batch_rows,
        flush_interval_s=cfg.flush_interval_s,
        recoverable_partitions=recoverable_partitions,
        insights=InsightsSetup(registry, cfg.timezone, book, live=True) if cfg.insights else None,
        exit_on_sink_error=True,
        # Devices share this flow: one that floods is held to its rate (an import is not).
        flood=cfg.flood,
        home_assistant=HaSetup(cfg.mqtt_url, Topics(cfg.ha_prefix, cfg.topic_prefix), registry, cfg.timezone,
                               book, f"{cfg.client_id_prefix}-ha-p{cfg.process_id or 0}")
        if cfg.ha_prefix else None,
    )
    return flow


def load_registry(cfg: IngestConfig) -> Registry:
    return Registry.load(cfg.registry_path) if cfg.registry_path else Registry.empty()


STARTUP_TIMEOUT_S = 12.0  # per server, so both unreachable still fail within 30 s


def _scrub(text: str, url: str) -> str:
    """An error message with the URL's password (if it repeats it) masked."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {s for s in (password, unquote(password or "")) if s}:
        text = text.replace(secret, "***")
    return text


def check_store(store_url: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Open and close the store, giving up after ``timeout_s``: at start an unreachable store is a
    one-line error (StartupError), not minutes of retries or a driver's traceback."""
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            open_store(store_url).close()
        except Exception as exc:  # noqa: BLE001 - reported below, on the caller's thread
            failure.append(exc)

    probe = threading.Thread(target=attempt, name="store-check", daemon=True)
    probe.start()
    probe.join(timeout_s)
    where = mask_url(store_url)
    if probe.is_alive():
        raise StartupError(f"the store {where} did not answer within {timeout_s:g} s")
    if failure:
        raise StartupError(f"cannot open the store {where}: {_scrub(describe(failure[0]), store_url)}")


def prepare_store(store_url: str, registry: Registry, tariffs_path: Path | None = None
                  ) -> TariffBook | None:
    """Migrate the schema, store the registry and the tariff file, once, before workers start.

    Returns the tariff book: the file's when one is given (it is stored, so the viewer prices
    with the same tariffs), else the one stored earlier, else None."""
    book = book_from_toml(tariffs_path) if tariffs_path else None
    store = open_store(store_url)
    try:
        store.migrate()
        store.upsert_devices(registry.device_infos())
        if book is not None:
            store.upsert_tariffs(book.to_rows())
            return book
        rows = store.tariffs()
        return TariffBook.from_rows(rows) if rows else None
    finally:
        store.close()


def run(cfg: IngestConfig, stop_event: threading.Event | None = None) -> None:
    """Run the ingest flow until stopped, idle for ``idle_exit_s``, or killed."""
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    from flows.mqtt_process import ProcessMqttSource, SpooledProcessMqttSource
    from flows.mqtt_source import MqttSource, SpooledMqttSource

    registry = load_registry(cfg)
    check_store(cfg.store_url, cfg.startup_timeout_s)
    try:
        book = prepare_store(cfg.store_url, registry, cfg.tariffs_path)
    except Exception as exc:  # noqa: BLE001 - a schema the code cannot migrate, a refused write, ...
        raise StartupError(f"cannot prepare the store {mask_url(cfg.store_url)}: "
                           f"{_scrub(describe(exc), cfg.store_url)}") from None
    if cfg.insights and book is None:
        log.warning("no_tariff", detail="no tariff file given or stored: recommendations are off "
                                        "(give --tariffs FILE)")
    recovery = None
    if cfg.recovery_dir is not None:
        cfg.recovery_dir.mkdir(parents=True, exist_ok=True)
        if not any(cfg.recovery_dir.iterdir()):
            # One partition per worker of the whole cluster is Bytewax's recommended layout.
            init_db_dir(cfg.recovery_dir, cfg.consumers)
        recovery = RecoveryConfig(cfg.recovery_dir)
        snapshot_compat.install()  # snapshots written before the layer move name old modules
        # ... and file the state of steps now inside operators under their old step ids.
        snapshot_compat.rename_steps(cfg.recovery_dir, {f"{FLOW_ID}.{old}": f"{FLOW_ID}.{new}"
                                                        for old, new in MOVED_STEPS.items()})
    # The client in a process of its own (flows/mqtt_process.py) unless --mqtt-in-process.
    source_class = ProcessMqttSource if cfg.mqtt_process else MqttSource
    settings = source_class(
        parse_mqtt_url(cfg.mqtt_url),
        subscriptions(registry),  # the default topic layouts and those the registry names
        topic_prefix=cfg.topic_prefix,
        client_id_prefix=f"{cfg.client_id_prefix}-p{cfg.process_id or 0}",
        # Shared subscriptions only when there is load to split: Mosquitto 2.0 does not restore
        # a shared subscription from its persistence file, so across a broker restart a shared
        # subscriber misses what is published before it re-subscribes; a plain one does not.
        share_group=cfg.share_group if cfg.consumers > 1 else None,
        retired_share_group=cfg.share_group,
        qos=cfg.qos,
        session_expiry_s=cfg.session_expiry_s,
        idle_exit_s=cfg.idle_exit_s,
        stop_event=stop_event,
        max_buffered=cfg.max_buffered_messages,
        connect_timeout_s=cfg.startup_timeout_s,
    )
    source: MqttSource | SpooledMqttSource = settings
    if recovery is not None and cfg.recovery_dir is not None:
        spooled = SpooledProcessMqttSource if cfg.mqtt_process else SpooledMqttSource
        source = spooled(settings, cfg.consumers, cfg.recovery_dir / "spool")
    # With recovery the open windows survive in the snapshot, so a stop signal must not flush
    # them as final (the next run completes them); without recovery, or when the input simply
    # went quiet (--idle-exit), flushing is the only way not to lose the minute in progress.
    def flush_on_eof() -> bool:
        return recovery is None or source.went_idle.is_set()

    flow = build_flow(cfg, source, registry, flush_on_eof=flush_on_eof,
                      recoverable_partitions=cfg.consumers if recovery is not None else None,
                      book=book)
    log.info(
        "flow_starting",
        mqtt=str(parse_mqtt_url(cfg.mqtt_url)),
        store=mask_url(cfg.store_url),
        workers=cfg.workers,
        process_id=cfg.process_id,
        recovery=str(cfg.recovery_dir) if cfg.recovery_dir else None,
    )
    cli_main(
        flow,
        workers_per_process=cfg.workers,
        process_id=cfg.process_id,
        addresses=list(cfg.addresses) or None,
        epoch_interval=timedelta(seconds=cfg.epoch_interval_s),
        recovery_config=recovery,
    )
    log.info("flow_stopped")
