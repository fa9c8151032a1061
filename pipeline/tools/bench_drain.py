"""`shems bench drain`: how fast the flow empties a backlog, against a subscriber that only counts.

A private Mosquitto without queue limits, a fresh store, and two persistent sessions (QoS 1,
MQTT 5 session expiry) subscribed before anything is published: one for a paho subscriber that
only counts, one with the client ids and topic filters `shems run` uses. Then ``--readings``
native readings from ``--devices`` devices are published while both are offline, so the broker
queues the whole backlog twice. Each consumer then drains its copy with nothing else running:

* ``raw_drain_per_s``: the counting subscriber, first message to last;
* ``shems_drain_per_s``: `shems run` (a subprocess), from the flow's first committed rows to
  the last, read by polling ``count(*)`` of ``readings`` every 20 ms (the rows of the first
  commit are not counted: they arrived before the clock started).

The ratio of the two is the share of the MQTT client's own capacity the flow keeps.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from rich.console import Console

from pipeline.config import parse_mqtt_url, sqlite_path, store_kind
from pipeline.ingest.decode import SUBSCRIPTIONS
from pipeline.tools.bench import Flow, _payloads
from pipeline.tools.broker import start_private_broker
from pipeline.tools.publisher import Publisher

SESSION_EXPIRY_S = 3600
SHARE_GROUP = "shems"  # `shems run`'s default --share-group


@dataclass
class DrainResult:
    readings: int
    devices: int
    raw_drain_per_s: float
    shems_drain_per_s: float
    insights: bool
    processes: int
    workers: int
    raw_seconds: float
    shems_seconds: float
    stored: int  # readings the flow stored (every one, or the run fails)
    mqtt_process: bool = True
    raw_cpu_us: float = 0.0  # CPU µs per message of the counting subscriber
    # CPU µs per reading of each process of the first flow process's tree (with --mqtt-process,
    # the flow and its client processes): what the work costs, which a busy machine does not change
    shems_cpu_us: list[float] = field(default_factory=list)
    recovery: bool = False  # the flow ran with --recovery-dir (snapshots and the spool)

    @property
    def ratio(self) -> float:
        return self.shems_drain_per_s / self.raw_drain_per_s if self.raw_drain_per_s else 0.0

    def as_json(self) -> dict:
        return {"readings": self.readings, "raw_drain_per_s": round(self.raw_drain_per_s, 1),
                "shems_drain_per_s": round(self.shems_drain_per_s, 1), "ratio": round(self.ratio, 3),
                "insights": self.insights, "processes": self.processes, "workers": self.workers,
                "devices": self.devices, "stored": self.stored,
                "mqtt_process": self.mqtt_process, "recovery": self.recovery,
                "raw_cpu_us_per_reading": round(self.raw_cpu_us, 2),
                "shems_cpu_us_per_reading": self.shems_cpu_us,
                "cpu_ratio": round(self.raw_cpu_us / sum(self.shems_cpu_us), 3) if sum(self.shems_cpu_us) else None}


def _session(url: str, client_id: str, filters: list[str], on_message=None) -> mqtt.Client:
    """Connect a persistent session (clean_start False, session expiry); with ``filters``,
    subscribe at QoS 1 and return after the SUBACK, without, resume the session's subscriptions
    (a SUBSCRIBE would queue behind the backlog the broker sends at once)."""
    ep = parse_mqtt_url(url)
    ready = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    ep.configure(client)
    if on_message is not None:
        client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    if filters:
        client.on_subscribe = lambda *a: ready.set()
        client.on_connect = lambda c, *a: c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
    else:
        client.on_connect = lambda *a: ready.set()
    client.connect(ep.host, ep.port, clean_start=False, properties=props)
    client.loop_start()
    if not ready.wait(10):
        client.loop_stop()
        raise RuntimeError(f"client {client_id} could not {'subscribe' if filters else 'connect'}")
    return client


def _leave(client: mqtt.Client) -> None:
    """A plain DISCONNECT: the broker keeps the session and queues for it."""
    client.disconnect()
    client.loop_stop()


def flow_client_ids(client_prefix: str, processes: int, workers: int) -> list[str]:
    """The MQTT client ids `shems run` uses (flows/ingest.py, flows/mqtt_source.py)."""
    return [f"{client_prefix}-p{p}-{w + p * workers}" for p in range(processes) for w in range(workers)]


def flow_filters(prefix: str, consumers: int) -> list[str]:
    plain = [prefix + t for t in SUBSCRIPTIONS]
    return [f"$share/{SHARE_GROUP}/{f}" for f in plain] if consumers > 1 else plain


class _StoreCounter:
    """``count(*)`` of ``readings`` in either store, for polling."""

    def __init__(self, store_url: str) -> None:
        self.sqlite = store_kind(store_url) == "sqlite"
        self.conn: sqlite3.Connection | psycopg.Connection
        if self.sqlite:
            self.conn = sqlite3.connect(sqlite_path(store_url), timeout=30)
        else:
            self.conn = psycopg.connect(store_url, autocommit=True)

    def count(self) -> int:
        try:
            row = self.conn.execute("SELECT count(*) FROM readings").fetchone()
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return 0  # the flow has not created the schema yet
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


_TICK = os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the flow and, with --mqtt-process, its client processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return out


def _cpu_s(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process (a busy machine stretches wall time, not
    these: they say what the work costs)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return out


def drain_raw(url: str, client_id: str, total: int, timeout: float) -> tuple[float, float]:
    """The counting subscriber drains its session: messages per second, first to last, and CPU
    µs per message (this process's, which does nothing else meanwhile)."""
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(client, userdata, message):
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == total:
            last = time.perf_counter()
            done.set()

    client = _session(url, client_id, [], on_message)
    done.wait(timeout)
    _leave(client)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    if count < total:
        raise RuntimeError(f"the counting subscriber received {count} of {total} messages")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return (total - 1) / (last - first), cpu / total * 1e6


@dataclass
class FlowDrain:
    per_s: float
    seconds: float
    stored: int
    cpu_us: list[float]  # CPU µs per reading of each flow process (the flow first), same interval


def drain_flow(flow: Flow, counter: _StoreCounter, baseline: int, total: int, timeout: float,
               console: Console) -> FlowDrain:
    """Poll the store until the flow has stored every reading: readings/s and CPU per reading
    from the first poll that saw rows to the last."""
    started = time.perf_counter()
    cpu_start = cpu_first = _cpu_s(_process_tree(flow.procs[0].pid))
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    shown = time.monotonic()
    while True:
        n = counter.count() - baseline
        now = time.perf_counter()
        pids = _process_tree(flow.procs[0].pid)
        if n > 0 and first is None:
            first = (now, n)
            cpu_first = _cpu_s(pids)
        if n >= total:
            cpu_end = _cpu_s(pids)
            break
        if any(p.poll() is not None for p in flow.procs):
            raise RuntimeError(f"the flow exited after storing {n} of {total} readings")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the flow stored {n} of {total} readings in {timeout:g} s")
        if time.monotonic() - shown >= 5:
            console.print(f"  flow stored {n:,} of {total:,}")
            shown = time.monotonic()
        time.sleep(0.02)
    assert first is not None

    def cpu_us(since: dict[int, float], readings: int) -> list[float]:
        return [round((cpu_end[p] - since.get(p, 0.0)) / readings * 1e6, 2) for p in cpu_end]

    if first[1] >= total:
        # One commit held the whole backlog (a small one): count from the flow's start instead,
        # which includes its start-up, so the rate is a lower bound.
        seconds = now - started
        console.print("  one commit held every reading: counted from the flow's start (a lower bound)")
        return FlowDrain(total / seconds, seconds, n, cpu_us(cpu_start, total))
    seconds = now - first[0]
    return FlowDrain((total - first[1]) / seconds, seconds, n, cpu_us(cpu_first, total - first[1]))


def run_drain(readings: int, devices: int, insights: bool, processes: int, workers: int,
              store_url: str | None, console: Console, timeout: float = 900.0,
              mqtt_process: bool = True, recovery: bool = False) -> DrainResult:
    broker = start_private_broker(unlimited_queues=True)
    tmp = tempfile.TemporaryDirectory(prefix="shems-drain-")
    store_url = store_url or f"sqlite:///{Path(tmp.name) / 'drain.db'}"
    run_id = uuid.uuid4().hex[:8]
    prefix = f"drain-{run_id}/"
    client_prefix = f"drain-{run_id}"
    consumers = processes * workers
    try:
        console.print(f"broker {broker.url} (no queue limits), store {store_url.split('@')[-1]}, "
                      f"{readings:,} readings from {devices:,} devices, "
                      f"{'with' if insights else 'without'} insights, {processes} process(es), "
                      f"MQTT client {'in its own process' if mqtt_process else 'in process'}"
                      f"{', with --recovery-dir' if recovery else ''}")
        raw_id = f"{client_prefix}-raw"
        # Both sessions exist before the first publish, then go offline: the broker queues for both.
        _leave(_session(broker.url, raw_id, [prefix + "shems/#"]))
        for cid in flow_client_ids(client_prefix, processes, workers):
            _leave(_session(broker.url, cid, flow_filters(prefix, consumers)))
        start = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)
        publisher = Publisher(broker.url, qos=1)
        started = time.perf_counter()
        for topic, payload in _payloads(prefix, devices, readings, start):
            publisher.publish_raw(topic, payload)
        publisher.close()
        console.print(f"backlog published in {time.perf_counter() - started:.1f} s")

        raw, raw_cpu_us = drain_raw(broker.url, raw_id, readings, timeout)
        console.print(f"counting subscriber: {raw:,.0f} msg/s")

        counter = _StoreCounter(store_url)
        baseline = counter.count()
        # `shems run` connects with the same client ids and finds its session queued.
        extra: tuple[str, ...] = () if mqtt_process else ("--mqtt-in-process",)
        if recovery:
            extra += ("--recovery-dir", str(Path(tmp.name) / "recovery"))
        flow = Flow(broker.url, store_url, prefix, workers, processes, 1, insights,
                    client_prefix=client_prefix, wait=False, extra_args=extra)
        try:
            drained = drain_flow(flow, counter, baseline, readings, timeout, console)
        finally:
            flow.stop()
            counter.close()
        shems = drained.per_s
        console.print(f"shems run: {shems:,.0f} readings/s ({shems / raw:.2f} of the counting subscriber); "
                      f"CPU µs per reading: counting subscriber {raw_cpu_us:.1f}, flow processes "
                      f"{', '.join(f'{c:.1f}' for c in drained.cpu_us)}")
        return DrainResult(readings, devices, raw, shems, insights, processes, workers,
                           (readings - 1) / raw, drained.seconds, drained.stored, mqtt_process,
                           raw_cpu_us, drained.cpu_us, recovery)
    finally:
        broker.stop()
        tmp.cleanup()


def print_drain(result: DrainResult, console: Console, as_json: bool) -> None:
    console.print(f"drain of {result.readings:,} readings: counting subscriber "
                  f"{result.raw_drain_per_s:,.0f}/s, shems {result.shems_drain_per_s:,.0f}/s, "
                  f"ratio {result.ratio:.2f} ({'with' if result.insights else 'without'} insights, "
                  f"{result.processes} process(es) x {result.workers} worker(s))")
    if as_json:
        print(json.dumps(result.as_json()), flush=True)
