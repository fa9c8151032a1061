"""MQTT as a Bytewax source: paho-mqtt 2.x, QoS 1, persistent MQTT 5 sessions, shared subscriptions.

Each worker builds one partition with its own client id (``<prefix>-<worker>``), so a restarted
worker resumes the broker-side session that queued its messages while it was down. With a share
group every worker subscribes to ``$share/<group>/<filter>`` and the broker splits the load.

The partition only receives and timestamps messages; decoding happens in a pure operator
downstream so one bad payload can never stop the source.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import paho.mqtt.client as mqtt
from pathlib import Path

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pipeline import metrics
from pipeline.config import MqttEndpoint
from pipeline.logs import get_logger
from flows.spool import Spool
from pipeline.records import RawMessage, Tick

log = get_logger(__name__)

# Mosquitto's count of QoS>0 messages it threw away because a client's queue was full.
SYS_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class MqttSource(DynamicSource):
    """One MQTT subscriber per Bytewax worker; the broker's ack is automatic (at most once on crash)."""

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
        # Set when input ended because it went quiet (the data is over), as opposed to a stop
        # signal (a restart is coming): only the former should flush open windows as final.
        self.went_idle = threading.Event()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "MqttPartition":
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

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> "SpooledMqttPartition":
        return SpooledMqttPartition(self.settings, int(for_part),
                                    Spool(self.spool_root / f"part-{for_part}"), resume_state or 0)


class _Receiver:
    """The paho client and the batching shared by both partition kinds."""

    manual_ack = False

    def __init__(self, source: MqttSource, worker_index: int) -> None:
        self.src = source
        self.worker = str(worker_index)
        self.worker_index = worker_index
        metrics.set_worker(self.worker)
        self.inbox: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
        self.prefix_len = len(source.topic_prefix)
        self.last_message_mono = time.monotonic()
        self.next_tick_mono = 0.0
        self.stopping = False
        self.received = 0
        self.connected = threading.Event()
        self._received = metrics.MESSAGES_RECEIVED.labels(worker=self.worker)

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
        self.client.connect_async(
            source.endpoint.host,
            source.endpoint.port,
            keepalive=30,
            clean_start=False,  # resume the broker-side session: messages queued while down arrive
            properties=props,
        )
        self.client.loop_start()
        # Wait briefly so a flow started right before a publisher does not miss the first burst.
        if not self.connected.wait(timeout=10):
            log.warning("mqtt_connect_slow", endpoint=str(source.endpoint), client_id=client_id)

    # paho callbacks run on paho's network thread: keep them minimal.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_failed", reason=str(reason_code), endpoint=str(self.src.endpoint))
            return
        plain = [self.src.topic_prefix + t for t in self.src.topics]
        shared = [f"$share/{self.src.share_group}/{f}" for f in plain] if self.src.share_group else []
        retired = [f"$share/{self.src.retired_share_group}/{f}" for f in plain] \
            if self.src.retired_share_group else []
        filters, other = (shared, plain) if shared else (plain, retired)
        # A session remembered from a run with the other layout would deliver everything twice.
        if other:
            client.unsubscribe(other)
        subs = [(f, SubscribeOptions(qos=self.src.qos)) for f in filters]
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
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("mqtt_subscribe_failed", reasons=failed, endpoint=str(self.src.endpoint))
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
            try:
                metrics.BROKER_DROPPED_MESSAGES.set(float(message.payload))
            except ValueError:
                pass
            return
        self._accept(
            RawMessage(topic[self.prefix_len :], message.payload, datetime.now(timezone.utc)),
            message,
        )

    def _accept(self, msg: RawMessage, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(msg)

    def _take(self, limit: int) -> list[RawMessage]:
        out: list = []
        get = self.inbox.get_nowait
        try:
            for _ in range(limit):
                out.append(get())
        except queue.Empty:
            pass
        return out

    def next_batch(self) -> Iterable[RawMessage | Tick]:
        batch: list[RawMessage | Tick] = self._take(self.src.batch_max)
        now = time.monotonic()
        if batch:
            self.last_message_mono = now
            self.received += len(batch)
            self._received.inc(len(batch))
        if self.stopping or self._should_stop(now, idle=not batch):
            self._shutdown()
            # Anything that arrived between the last drain and the disconnect is still ours.
            batch.extend(self._take(sys.maxsize))
            if not batch:
                raise StopIteration()
            return batch
        if now >= self.next_tick_mono:
            batch.append(Tick(datetime.now(timezone.utc), self.worker_index))
            self.next_tick_mono = now + self.src.tick_s
        return batch

    def next_awake(self) -> datetime | None:
        # Poll the in-memory queue every few ms when idle rather than spinning the worker.
        if self.inbox.empty():
            return datetime.now(timezone.utc) + timedelta(milliseconds=5)
        return None

    def _should_stop(self, now: float, idle: bool) -> bool:
        if self.src.stop_event.is_set():
            return True
        limit = self.src.idle_exit_s
        if idle and limit is not None and now - self.last_message_mono >= limit:
            self.src.went_idle.set()
            return True
        return False

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
    """paho acknowledges each message on receipt."""


class SpooledMqttPartition(_Receiver, StatefulSourcePartition):
    """Acknowledges a message only once it is in the spool; resumes from a snapshot offset."""

    manual_ack = True

    def __init__(self, source: MqttSource, index: int, spool: Spool, resume_offset: int) -> None:
        self.spool = spool
        self.emitted = resume_offset  # spool offset just after the last message handed on
        # Received and acknowledged before the last stop but not in a committed epoch: again.
        self.replay = spool.read_from(resume_offset, spool.end)
        self.replaying = resume_offset < spool.end
        if self.replaying:
            log.info("spool_replay", part=index, bytes=spool.end - resume_offset)
        super().__init__(source, index)

    def _accept(self, msg: RawMessage, message: mqtt.MQTTMessage) -> None:
        end = self.spool.append(msg)
        self.client.ack(message.mid, message.qos)
        self.inbox.put((msg, end))

    def _take(self, limit: int) -> list[RawMessage]:
        if self.replaying:
            out = []
            for msg, end in itertools.islice(self.replay, limit):
                out.append(msg)
                self.emitted = end
            if len(out) < limit:
                self.replaying = False
            if out:
                return out
        items = super()._take(limit)
        if items:
            self.emitted = items[-1][1]
        return [msg for msg, _ in items]

    def next_awake(self) -> datetime | None:
        return None if self.replaying else super().next_awake()

    def snapshot(self) -> int:
        self.spool.snapshotted(self.emitted)
        return self.emitted

    def close(self) -> None:
        super().close()
        self.spool.close()
