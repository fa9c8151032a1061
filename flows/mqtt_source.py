"""MQTT as a Bytewax source: paho-mqtt 2.x, QoS 1, persistent MQTT 5 sessions, shared subscriptions.

Each worker builds one partition with its own client id (``<prefix>-<worker>``), so a restarted
worker resumes the broker-side session that queued its messages while it was down. With a share
group every worker subscribes to ``$share/<group>/<filter>`` and the broker splits the load.

The partition only receives and timestamps messages; decoding happens in a pure operator
downstream so one bad payload can never stop the source.

Backpressure: at most ``max_buffered`` received messages wait in memory for the flow. Acks are
manual: a message is acknowledged once it is in the buffer (and, with a spool, on disk). When the
buffer is full, newly delivered messages are held unacknowledged, and the broker, which sends only
a bounded number of unacknowledged QoS 1 messages to a client, stops sending and queues the rest
in our session. The network thread never blocks, so keepalive goes on while a store outage stalls
the workers.

At start-up the first connection must succeed within ``connect_timeout_s``: an unreachable broker
or refused credentials end the process with one line (flows/fatal.py). Once connected, outages
are ridden out by paho's reconnects.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

import paho.mqtt.client as mqtt
from bytewax.inputs import DynamicSource, FixedPartitionedSource, StatefulSourcePartition, StatelessSourcePartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from flows.fatal import before_exit, describe, exit_now
from flows.paho_properties import share_property_tables
from flows.spool import CrashGuard, Spool
from pipeline import metrics
from pipeline.config import MqttEndpoint
from pipeline.logs import get_logger
from pipeline.records import DeadLetter, RawMessage, Tick

# What the sources hand the flow: messages, dead letters (a poison message replayed after a
# crash) and ticks (the clock, so windows close while no message comes).
SourceItem = RawMessage | DeadLetter | Tick

log = get_logger(__name__)

# Mosquitto's count of QoS>0 messages it threw away because a client's queue was full.
SYS_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"

DEFAULT_MAX_BUFFERED = 100_000
# Unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5 Receive Maximum): what
# can arrive after the buffer is full, on top of it. Mosquitto's own default is 20.
RECEIVE_MAXIMUM = 1000


class MqttSource(DynamicSource):
    """One MQTT subscriber per Bytewax worker; a message is acknowledged once buffered (at most
    once on a crash: use SpooledMqttSource for at least once)."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        topics: Sequence[str],
        *,
        topic_prefix: str = "",
        client_id_prefix: str = "shems-ingest",
        share_group: str | None = None,
        retired_share_group: str | None = None,
        qos: int = 1,
        session_expiry_s: int = 7 * 24 * 3600,
        idle_exit_s: float | None = None,
        stop_event: threading.Event | None = None,
        batch_max: int = 10_000,
        tick_s: float = 0.2,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        connect_timeout_s: float = 12.0,
    ) -> None:
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.topic_prefix = topic_prefix
        self.client_id_prefix = client_id_prefix
        self.share_group = share_group
        # The group a differently scaled earlier run may have left in the broker-side session.
        self.retired_share_group = retired_share_group
        self.qos = qos
        self.session_expiry_s = session_expiry_s
        self.idle_exit_s = idle_exit_s
        self.stop_event = stop_event or threading.Event()
        self.batch_max = batch_max
        self.tick_s = tick_s
        self.max_buffered = max_buffered
        self.connect_timeout_s = connect_timeout_s
        # The broker's dropped-message count as last seen, and where to keep it across restarts
        # (the recovery directory, when there is one): drops while the flow was down show too.
        self.dropped_seen: int | None = None
        self.dropped_state: Path | None = None
        # Set when input ended because it went quiet (the data is over), as opposed to a stop
        # signal (a restart is coming): only the former should flush open windows as final.
        self.went_idle = threading.Event()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition:
        return MqttPartition(self, worker_index)


class SpooledMqttSource(FixedPartitionedSource):
    """MQTT with a local spool and manual acks, for flows with Bytewax recovery: a SIGKILL loses
    nothing (see flows/spool.py). One partition per worker of the whole cluster."""

    def __init__(self, settings: MqttSource, partitions: int, spool_root: Path) -> None:
        self.settings = settings
        self.partitions = partitions
        self.spool_root = spool_root

    @property
    def went_idle(self) -> threading.Event:
        return self.settings.went_idle

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition:
        self.settings.dropped_state = self.spool_root / "broker_dropped"
        try:
            spool = Spool(self.spool_root / f"part-{for_part}")
        except OSError as exc:
            exit_now("spool", f"cannot open the spool in {self.spool_root}: {describe(exc)}")
        return SpooledMqttPartition(self.settings, int(for_part), spool, resume_state or 0)


class BatchPacing:
    """What every source partition does around a batch, in process or fed by a client process:
    count it, stop on a signal or after ``--idle-exit`` of silence, add the wall-clock Tick."""

    src: MqttSource
    worker_index: int
    last_message_mono: float
    next_tick_mono: float
    received: int
    stopping: bool
    _received: Any  # the partition's messages-received counter

    def next_batch(self) -> Iterable[SourceItem]:
        try:
            return self._next_batch()
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 - not about one message: a full disk, a bug
            exit_now("mqtt source", f"the MQTT source failed: {describe(exc)}")

    def _next_batch(self) -> Iterable[SourceItem]:
        raise NotImplementedError

    def _paced(self, batch: list, now: float) -> list:
        """The batch just read, counted; when the flow is to stop, with what the partition still
        receives as it stops (StopIteration once that is nothing too), else with a Tick when due."""
        self._count(batch, now)
        if self.stopping or self._should_stop(now, idle=not batch):
            batch.extend(self._stop_and_drain())
            if not batch:
                raise StopIteration()
            return batch
        return self._with_tick(batch, now)

    def _stop_and_drain(self) -> list:
        """Stop receiving (idempotent); what arrived before the stop."""
        raise NotImplementedError

    def _count(self, batch: list, now: float) -> None:
        if batch:
            self.last_message_mono = now
            self.received += len(batch)
            self._received.inc(len(batch))

    def _should_stop(self, now: float, idle: bool) -> bool:
        if self.src.stop_event.is_set():
            return True
        limit = self.src.idle_exit_s
        if idle and limit is not None and now - self.last_message_mono >= limit:
            self.src.went_idle.set()
            return True
        return False

    def _with_tick(self, batch: list, now: float) -> list:
        if now >= self.next_tick_mono:
            batch.append(Tick(datetime.now(timezone.utc), self.worker_index))
            self.next_tick_mono = now + self.src.tick_s
        return batch


class _Receiver(BatchPacing):
    """The paho client and the batching shared by both partition kinds."""

    manual_ack = True  # acked once buffered (see the module docstring), never before
    expect_session = False  # at the first connect: True when earlier runs left work behind

    def __init__(self, source: MqttSource, worker_index: int) -> None:
        share_property_tables()
        self.src = source
        self.worker = str(worker_index)
        self.worker_index = worker_index
        metrics.set_worker(self.worker)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        # Delivered while the inbox was full: not acknowledged, so the broker stops sending more.
        self.held: deque[tuple[RawMessage, int, int]] = deque()
        self.lock = threading.Lock()  # the inbox bound, the held list and spool appends
        self.paused_since: float | None = None
        self.prefix_len = len(source.topic_prefix)
        self.last_message_mono = time.monotonic()
        self.next_tick_mono = 0.0
        self.stopping = False
        self.received = 0
        self.connected = threading.Event()
        self.ever_connected = False
        self.refused: str | None = None  # the broker's answer to a failed first connect
        self.data_filters = 0  # how many of the subscribed filters are data (not $SYS)
        self._received = metrics.MESSAGES_RECEIVED.labels(worker=self.worker)
        self._buffered = metrics.SOURCE_BUFFERED.labels(worker=self.worker)
        self._held = metrics.SOURCE_HELD.labels(worker=self.worker)

        client_id = f"{source.client_id_prefix}-{worker_index}"
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=self.manual_ack,
        )
        source.endpoint.configure(self.client)
        # paho reconnects by itself with this backoff once loop_start() runs.
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = source.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(
            source.endpoint.host,
            source.endpoint.port,
            keepalive=30,
            clean_start=False,  # resume the broker-side session: messages queued while down arrive
            properties=props,
        )
        self.client.loop_start()
        self._wait_first_connect(client_id)

    def _wait_first_connect(self, client_id: str) -> None:
        """At start-up a broker that cannot be reached, or that refuses us, ends the process:
        an orchestrator restarting it is better than a flow that silently receives nothing."""
        deadline = time.monotonic() + self.src.connect_timeout_s
        while not self.connected.is_set() and self.refused is None and time.monotonic() < deadline:
            self.connected.wait(0.05)
        if self.connected.is_set():
            return
        self.stopping = True
        self.client.loop_stop()
        endpoint = str(self.src.endpoint)
        if self.refused is not None:
            self.fail("mqtt", f"the MQTT broker {endpoint} refused client {client_id}: {self.refused}")
        self.fail("mqtt", f"cannot reach the MQTT broker {endpoint} within {self.src.connect_timeout_s:g} s")

    def fail(self, where: str, message: str) -> NoReturn:
        """Ends the process with one line (a client in a process of its own reports to the flow
        instead: flows/mqtt_process.py)."""
        exit_now(where, message)

    # paho callbacks run on paho's network thread: keep them minimal.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_failed", reason=str(reason_code), endpoint=str(self.src.endpoint))
            if not self.ever_connected:
                self.refused = str(reason_code)
            return
        expected = self.ever_connected or self.expect_session
        self.ever_connected = True
        with self.lock:
            if flags.session_present:
                self.held.clear()  # the broker sends again what we did not acknowledge
            else:
                # Their packet ids belonged to the lost session: keep them, never ack them.
                self.held = deque((msg, 0, 0) for msg, _, _ in self.held)
        if expected and not flags.session_present:
            metrics.MQTT_SESSIONS_LOST.inc()
            log.warning("mqtt_session_lost", endpoint=str(self.src.endpoint), worker=self.worker,
                        detail="the broker kept no session for this client: what it queued while "
                               "we were away is lost (session expired, broker restarted without "
                               "persistence, or another client took the client id)")
        plain = [self.src.topic_prefix + t for t in self.src.topics]
        shared = [f"$share/{self.src.share_group}/{f}" for f in plain] if self.src.share_group else []
        retired = [f"$share/{self.src.retired_share_group}/{f}" for f in plain] \
            if self.src.retired_share_group else []
        filters, other = (shared, plain) if shared else (plain, retired)
        # A session remembered from a run with the other layout would deliver everything twice.
        if other:
            client.unsubscribe(other)
        # retainHandling=2: the broker sends no retained message on subscribing. A retained state
        # is a device's last message, replayed at every (re)connect; one without a time stamp of
        # its own would be stamped with its arrival and read as a new measurement (a plug switched
        # off for a week "drawing" its last 120 W after each reconnect). Live messages, retained
        # or not, still arrive, and the persistent session queues them while we are away.
        subs = [(f, SubscribeOptions(qos=self.src.qos, retainHandling=2)) for f in filters]
        self.data_filters = len(subs)
        if self.worker == "0":
            subs.append((SYS_DROPPED_TOPIC, SubscribeOptions(qos=0)))
        client.subscribe(subs)
        log.info(
            "mqtt_connected",
            endpoint=str(self.src.endpoint),
            session_present=bool(flags.session_present),
            filters=filters,
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        # The broker's counters come last (worker 0): without them the flow still works.
        data, counters = reason_codes[: self.data_filters], reason_codes[self.data_filters :]
        if any(rc.is_failure for rc in counters):
            log.warning("broker_counters_refused", topic=SYS_DROPPED_TOPIC,
                        detail="cannot watch the broker's dropped-message count (ACL?)")
        failed = [str(rc) for rc in data if rc.is_failure]
        if failed:
            log.error("mqtt_subscribe_failed", reasons=failed, endpoint=str(self.src.endpoint))
            if not self.connected.is_set():
                self.refused = f"subscription refused ({', '.join(sorted(set(failed)))})"
            return
        # Only now does the broker route messages to us (a publish racing the SUBSCRIBE is lost).
        log.info("mqtt_subscribed", worker=self.worker)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.stopping:
            log.warning("mqtt_disconnected", reason=str(reason_code), endpoint=str(self.src.endpoint))

    def _on_message(self, client, userdata, message) -> None:
        topic = message.topic
        if topic.startswith("$SYS/"):
            self._on_broker_dropped(message.payload)
            return
        msg = self._stamp(topic[self.prefix_len :], message.payload)
        with self.lock:
            if self.held or not self._room():
                self._hold(msg, message.mid, message.qos)
                return
            self._admit(msg, message.mid, message.qos)

    @staticmethod
    def _stamp(topic: str, payload: bytes) -> Any:
        """What is buffered of a message just received, stamped with the time now."""
        return RawMessage(topic, payload, datetime.now(timezone.utc))

    def _room(self) -> bool:
        """Whether the flow has room for one more received message (--max-buffered-messages)."""
        return self.inbox.qsize() < self.src.max_buffered

    def _on_broker_dropped(self, payload: bytes) -> None:
        try:
            total = int(float(payload))
        except ValueError:
            return
        metrics.BROKER_DROPPED_MESSAGES.set(total)
        src = self.src
        if src.dropped_seen is None and src.dropped_state is not None:
            try:
                src.dropped_seen = int(src.dropped_state.read_text())
            except (OSError, ValueError):
                pass
        before = src.dropped_seen
        if before is None:
            delta = 0  # the first count seen: a baseline (the broker counts since it started)
        elif total >= before:
            delta = total - before
        else:
            delta = total  # the broker restarted and counts from zero again
        if delta > 0:
            metrics.BROKER_DROPPED_SEEN.inc(delta)
            log.warning("broker_dropped_messages", delta=delta, total=total,
                        endpoint=str(src.endpoint),
                        detail="the broker threw messages away (a client's queue was full): "
                               "raise max_queued_messages (deploy/mosquitto/mosquitto.conf)")
        src.dropped_seen = total
        if src.dropped_state is not None and total != before:
            try:
                src.dropped_state.write_text(str(total))
            except OSError:
                pass

    def _admit(self, msg: Any, mid: int, qos: int) -> None:
        """Into the inbox, then acknowledged (called with the lock held). ``msg``: what
        ``_stamp`` made."""
        self.inbox.put(msg)
        if mid:
            self.client.ack(mid, qos)

    def _hold(self, msg: RawMessage, mid: int, qos: int) -> None:
        if qos == 0 and len(self.held) >= RECEIVE_MAXIMUM:
            # QoS 0 has no acknowledgement, so the broker cannot be slowed down: at most once.
            return
        self.held.append((msg, mid, qos))
        self._held.set(len(self.held))
        if self.paused_since is None:
            self.paused_since = time.monotonic()
            self._buffered.set(self.inbox.qsize())
            metrics.SOURCE_PAUSES.labels(worker=self.worker).inc()
            log.warning("mqtt_source_paused", worker=self.worker, buffered=self.inbox.qsize(),
                        detail="the flow is behind (store outage?): no more acks, the broker queues")

    def _release_held(self) -> None:
        """Admit held messages once the flow has made room (worker thread)."""
        with self.lock:
            while self.held and self._room():
                self._admit(*self.held.popleft())
            self._held.set(len(self.held))
            if not self.held and self.paused_since is not None:
                log.info("mqtt_source_resumed", worker=self.worker,
                         paused_s=round(time.monotonic() - self.paused_since, 1))
                self.paused_since = None

    def _take(self, limit: int) -> list[SourceItem]:
        return self._drain(limit)

    def _drain(self, limit: int) -> list[Any]:
        """Up to ``limit`` inbox items: messages, or for the spooled source (message, spool
        position) pairs."""
        out: list[Any] = []
        get = self.inbox.get_nowait
        try:
            for _ in range(limit):
                out.append(get())
        except queue.Empty:
            pass
        if self.held:
            self._release_held()
        return out

    def _next_batch(self) -> Iterable[SourceItem]:
        batch = self._take(self.src.batch_max)
        self._buffered.set(self.inbox.qsize())
        return self._paced(batch, time.monotonic())

    def _stop_and_drain(self) -> list:
        self._shutdown()
        # Anything that arrived between the last drain and the disconnect is still ours.
        return self._take(sys.maxsize)

    def next_awake(self) -> datetime | None:
        # Poll the in-memory queue every few ms when idle rather than spinning the worker.
        if self.inbox.empty():
            return datetime.now(timezone.utc) + timedelta(milliseconds=5)
        return None

    def _shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        # A plain DISCONNECT keeps the session (clean_start=False, expiry > 0): the broker keeps
        # queueing for us, and everything paho already acknowledged is in our inbox.
        self.client.disconnect()
        self.client.loop_stop()
        log.info("mqtt_source_stopped", worker=self.worker, received=self.received)

    def close(self) -> None:
        self._shutdown()


class MqttPartition(_Receiver, StatelessSourcePartition):
    """Acknowledges a message once it is in the in-memory buffer (at most once on a crash)."""


class SpoolReplay:
    """After a restart, hand on again what the spool holds past the snapshot's offset; snapshot
    the offset just after the last message handed on. Shared by the spooled partition fed by an
    in-process client and the one fed by a client process (flows/mqtt_process.py).

    The spool's crash guard (flows/spool.py) knows whether earlier starts from this offset died:
    then the replay goes one message at a time, recording which one is in hand, and a message
    that was in hand when the process died is dead-lettered instead of replayed again."""

    def _start_replay(self, index: int, spool: Spool, resume_offset: int) -> None:
        self.spool = spool
        self.part = index
        self.emitted = resume_offset  # spool offset just after the last message handed on
        self.guard = CrashGuard(spool.dir, resume_offset, spool.end)
        before_exit(self.guard.settled)  # a deliberate exit blames no message
        # Received and acknowledged before the last stop but not in a committed epoch: again.
        self.replay = spool.read_from(resume_offset, spool.end)
        self.replay_at = resume_offset  # where the next replayed message starts
        self.replaying = resume_offset < spool.end
        if self.replaying:
            log.info("spool_replay", part=index, bytes=spool.end - resume_offset,
                     starts=self.guard.starts)
        if self.guard.careful:
            metrics.SPOOL_CAREFUL_REPLAYS.labels(worker=str(index)).inc()
            log.warning("spool_careful_replay", part=index, offset=resume_offset,
                        starts=self.guard.starts, crashed_at=self.guard.crashed,
                        detail="earlier starts from this spool offset died: replaying one message "
                               "at a time; the one in hand at a crash is dead-lettered")

    def _take_replay(self, limit: int) -> list[SourceItem]:
        out: list[SourceItem] = []
        for msg, end in itertools.islice(self.replay, limit):
            start, self.replay_at = self.replay_at, end
            if start == self.guard.crashed or self.guard.is_poison(msg):
                log.warning("spool_crashed_message_dead_lettered", part=self.part, offset=start,
                            topic=msg.topic[:200])
                out.append(self.guard.dead_letter(msg))
            else:
                if self.guard.careful:
                    self.guard.handing(start)
                out.append(msg)
            self.emitted = end
        if len(out) < limit:
            self.replaying = False
            self.guard.settled()
        return out

    def _screen(self, msgs: list[RawMessage]) -> list[SourceItem]:
        """A copy of a message that killed the process, delivered again, must not kill it again."""
        if self.guard.poison:
            return [self.guard.dead_letter(msg) if self.guard.is_poison(msg) else msg for msg in msgs]
        return list(msgs)

    def snapshot(self) -> int:
        self.spool.snapshotted(self.emitted)
        return self.emitted

    def _close_spool(self) -> None:
        self.guard.settled()  # a clean stop is no crash
        self.guard.close()
        self.spool.close()


class SpooledMqttPartition(SpoolReplay, _Receiver, StatefulSourcePartition):
    """Acknowledges a message only once it is in the spool; resumes from a snapshot offset."""

    def __init__(self, source: MqttSource, index: int, spool: Spool, resume_offset: int) -> None:
        self._start_replay(index, spool, resume_offset)
        # Anything in the spool means an earlier run subscribed: the broker should know us.
        self.expect_session = spool.end > 0
        super().__init__(source, index)

    def _admit(self, msg: RawMessage, mid: int, qos: int) -> None:
        end = self.spool.append(msg)
        if mid:
            self.client.ack(mid, qos)
        self.inbox.put((msg, end))

    def _take(self, limit: int) -> list[SourceItem]:
        if self.replaying:
            out = self._take_replay(1 if self.guard.careful else limit)
            if out:
                return out
        items: list[tuple[RawMessage, int]] = self._drain(limit)
        if items:
            self.emitted = items[-1][1]
        return self._screen([msg for msg, _ in items])

    def next_awake(self) -> datetime | None:
        return None if self.replaying else super().next_awake()

    def close(self) -> None:
        super().close()
        self._close_spool()
