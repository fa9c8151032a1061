"""The MQTT client in a process of its own, one per worker (``shems run --mqtt-process``).

Profiled on a drain (issue 13), paho's network thread (reading packets, one PUBACK per message,
our ``on_message``) took about as much CPU as the whole dataflow, and both need the GIL: they
take turns. Here the unchanged paho receiver (flows/mqtt_source.py: ``MqttPartition``: session,
subscriptions, SUBACK readiness, backpressure, acks once buffered) runs in a child process, which
hands the worker whole batches through a pipe: ``[(topic, payload, received_at), ...]``, pickled
once per batch. The worker only unpickles a batch and makes the ``RawMessage`` records.

Delivery is what the in-process ``MqttPartition`` gives (acknowledged once buffered: at most once
on a crash), so this is not used with ``--recovery-dir``, whose spool must acknowledge only what
it has written. Backpressure: the pipe holds a bounded amount; when the worker stops reading, the
child's sends block, its inbox fills to ``--max-buffered-messages`` and paho holds further
deliveries unacknowledged, as in process. The child's own gauges (buffered, held, pauses, the
broker's dropped count) are not exported by the flow's metrics endpoint; messages received are.

A child never outlives its flow: it exits when the parent process is gone (a SIGKILL leaves no
client holding the session's client id) or when the pipe breaks.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import NoReturn

from bytewax.inputs import StatelessSourcePartition

from flows.fatal import describe, exit_now
from flows.mqtt_source import BatchPacing, MqttPartition, MqttSource, SourceItem
from pipeline import metrics
from pipeline.logs import get_logger
from pipeline.records import RawMessage

log = get_logger(__name__)

_READY = "ready"
_FAILED = "failed"
_GATHER_S = 0.005
_STARTUP_GRACE_S = 30.0  # a spawned interpreter imports paho and the pipeline before connecting


def _settings_for_child(src: MqttSource) -> dict:
    """What the child needs to build the same receiver (events and paths stay with the flow)."""
    return dict(endpoint=src.endpoint, topics=src.topics, topic_prefix=src.topic_prefix,
                client_id_prefix=src.client_id_prefix, share_group=src.share_group,
                retired_share_group=src.retired_share_group, qos=src.qos,
                session_expiry_s=src.session_expiry_s, batch_max=src.batch_max,
                max_buffered=src.max_buffered, connect_timeout_s=src.connect_timeout_s)


class _ChildReceiver(MqttPartition):
    """The in-process receiver, reporting a failed first connect to the flow instead of exiting."""

    conn = None

    def fail(self, where: str, message: str) -> NoReturn:
        try:
            if self.conn is not None:
                self.conn.send_bytes(pickle.dumps((_FAILED, where, message)))
        finally:
            os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)  # the flow is gone: nobody reads, and the client id must be free
        time.sleep(0.5)


def child_main(settings: dict, worker_index: int, conn, stop, parent_pid: int) -> None:
    """The child process: connect, then forward the inbox in batches until told to stop."""
    from pipeline.logs import configure

    configure()  # as `shems run` does: same stream, same format
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    _ChildReceiver.conn = conn
    receiver = _ChildReceiver(MqttSource(**settings), worker_index)
    conn.send_bytes(pickle.dumps((_READY,)))
    inbox, batch_max = receiver.inbox, settings["batch_max"]
    try:
        while not stop.is_set():
            try:
                first = inbox.get(timeout=0.05)
            except queue.Empty:
                if receiver.held:
                    receiver._release_held()
                continue
            # A moment for a batch to gather: forwarding a few messages at a time costs a pipe
            # write and two GIL hand-overs each time (paho's thread and this one).
            time.sleep(_GATHER_S)
            items = [first, *receiver._drain(batch_max - 1)]
            receiver.received += len(items)  # for its stop line
            conn.send_bytes(pickle.dumps([(m.topic, m.payload, m.received_at) for m in items],
                                         protocol=pickle.HIGHEST_PROTOCOL))
        receiver._shutdown()  # a plain DISCONNECT: the session stays
        # Anything acknowledged before the disconnect is ours: hand it on, then say so.
        rest = receiver._drain(sys.maxsize)
        if rest:
            conn.send_bytes(pickle.dumps([(m.topic, m.payload, m.received_at) for m in rest],
                                         protocol=pickle.HIGHEST_PROTOCOL))
        conn.send_bytes(pickle.dumps(None))
    except (BrokenPipeError, EOFError, OSError):
        os._exit(0)  # the flow is gone
    conn.close()


class ProcessMqttSource(MqttSource):
    """:class:`MqttSource` whose partitions run their client in a process of their own."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition:
        return ProcessMqttPartition(self, worker_index)


class ProcessMqttPartition(BatchPacing, StatelessSourcePartition):
    """A worker's source partition fed by its client process."""

    def __init__(self, source: MqttSource, worker_index: int) -> None:
        self.src = source
        self.worker = str(worker_index)
        self.worker_index = worker_index
        metrics.set_worker(self.worker)
        self._received = metrics.MESSAGES_RECEIVED.labels(worker=self.worker)
        ctx = multiprocessing.get_context("spawn")  # never fork a process running Bytewax's threads
        self.conn, child_end = ctx.Pipe(duplex=False)
        self.stop = ctx.Event()
        self.proc = ctx.Process(
            target=child_main, name=f"shems-mqtt-{worker_index}", daemon=True,
            args=(_settings_for_child(source), worker_index, child_end, self.stop, os.getpid()))
        self.proc.start()
        child_end.close()
        self.last_message_mono = time.monotonic()
        self.next_tick_mono = 0.0
        self.stopping = False
        self.finished = False
        self.received = 0
        self._wait_ready()

    def _wait_ready(self) -> None:
        if not self.conn.poll(self.src.connect_timeout_s + _STARTUP_GRACE_S):
            self.proc.kill()
            exit_now("mqtt", f"the MQTT client process did not connect to {self.src.endpoint} within "
                             f"{self.src.connect_timeout_s + _STARTUP_GRACE_S:g} s")
        try:
            answer = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.proc.join(5)
            exit_now("mqtt", f"the MQTT client process ended at start (exit code {self.proc.exitcode})")
        if answer[0] == _FAILED:
            self.proc.join(5)
            exit_now(answer[1], answer[2])

    def _read(self, limit: int, wait: float = 0.0) -> list[SourceItem]:
        out: list[SourceItem] = []
        conn = self.conn
        try:
            while len(out) < limit and not self.finished and conn.poll(wait):
                items = pickle.loads(conn.recv_bytes())
                if items is None:
                    self.finished = True
                    break
                out.extend(RawMessage(topic, payload, at) for topic, payload, at in items)
                wait = 0.0
        except (EOFError, OSError) as exc:
            if not self.stopping:
                exit_now("mqtt", f"the MQTT client process ended (exit code {self.proc.exitcode}): "
                                 f"{describe(exc)}")
            self.finished = True
        return out

    def next_batch(self) -> Iterable[SourceItem]:
        return self._paced(self._read(self.src.batch_max), time.monotonic())

    def next_awake(self) -> datetime | None:
        if self.conn.poll():
            return None
        return datetime.now(timezone.utc) + timedelta(milliseconds=5)

    def _stop_and_drain(self) -> list[SourceItem]:
        return self._shutdown()

    def _shutdown(self) -> list[SourceItem]:
        if self.stopping:
            return []
        self.stopping = True
        self.stop.set()
        # What the child acknowledged before its DISCONNECT comes after, then the end marker.
        rest: list[SourceItem] = []
        deadline = time.monotonic() + 30
        while not self.finished and time.monotonic() < deadline:
            rest.extend(self._read(sys.maxsize, wait=0.2))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
        self.received += len(rest)
        log.info("mqtt_source_stopped", worker=self.worker, received=self.received, process=True)
        return rest

    def close(self) -> None:
        self._shutdown()
        self.conn.close()
