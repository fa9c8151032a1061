"""The MQTT client in a process of its own, one per worker (the default of ``shems run``;
``--mqtt-in-process`` keeps it in the flow's process).

Profiled on a drain (issue 13), paho's network thread (reading packets, one PUBACK per message,
our ``on_message``) took about as much CPU as the whole dataflow, and both need the GIL: they
take turns. Here the unchanged paho receiver (flows/mqtt_source.py: session, subscriptions,
SUBACK readiness, backpressure, manual acks) runs in a child process, which hands the worker whole
batches through a pipe: ``([(topic, payload, received_at epoch s), ...], spool_end)``, pickled once
per batch. The worker only unpickles a batch and makes the ``RawMessage`` records.

Delivery is what the in-process partitions give. Without ``--recovery-dir`` a message is
acknowledged once buffered (at most once on a crash). With it, the child is the spool's writer
(flows/spool.py): it acknowledges a message only once it is in the spool, and tells the worker the
spool offset after each batch; the worker snapshots the offset after the last message it handed
on and, after a restart, replays the spool from the snapshot's offset before taking new batches:
exactly once across a SIGKILL, as in process. A killed flow's child can go on appending for up to
half a second (until it notices): the spool's writer lock makes the restarted worker wait for it
to exit before it reads where the spool ends, and a child that gets the lock after its flow died
exits before writing.

Backpressure: ``--max-buffered-messages`` bounds the messages in the child's inbox plus those sent
to the worker and not yet taken by it (a shared counter says how many it took); beyond that paho
holds deliveries unacknowledged, as in process. The child's gauges and counters (buffered, held,
pauses, the broker's dropped count, lost sessions) reach the flow's metrics through shared memory,
read by a thread of the flow four times a second, so they are current while the worker is blocked.

A child never outlives its flow: it exits when the parent process is gone (a SIGKILL leaves no
client holding the session's client id) or when the pipe breaks.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn

from bytewax.inputs import StatefulSourcePartition, StatelessSourcePartition
from prometheus_client import REGISTRY

from flows.fatal import describe, exit_now
from flows.mqtt_source import BatchPacing, MqttPartition, MqttSource, SourceItem, SpooledMqttSource, SpoolReplay
from flows.spool import Spool, SpoolBusy, encode_parts, wait_for_writer
from pipeline import metrics
from pipeline.logs import get_logger
from pipeline.records import RawMessage

log = get_logger(__name__)

_READY = "ready"
_FAILED = "failed"
_GATHER_S = 0.005
_STARTUP_GRACE_S = 30.0  # a spawned interpreter imports paho and the pipeline before connecting
_STATS_S = 0.25  # how often the child publishes its gauges and the flow copies them
# The child's metrics, in the shared array: gauges are copied, counters added by their increase.
_BUFFERED, _HELD, _PAUSES, _DROPPED, _DROPPED_SEEN, _SESSIONS_LOST = range(6)
_STATS_LEN = 6
_SPOOL_WAIT_S = 10.0  # a killed flow's child notices within a second


def _settings_for_child(src: MqttSource) -> dict:
    """What the child needs to build the same receiver (events stay with the flow)."""
    return dict(endpoint=src.endpoint, topics=src.topics, topic_prefix=src.topic_prefix,
                client_id_prefix=src.client_id_prefix, share_group=src.share_group,
                retired_share_group=src.retired_share_group, qos=src.qos,
                session_expiry_s=src.session_expiry_s, batch_max=src.batch_max,
                max_buffered=src.max_buffered, connect_timeout_s=src.connect_timeout_s)


class _ChildReceiver(MqttPartition):
    """The in-process receiver in the child: reports a failed first connect to the flow instead
    of exiting, counts what the worker has not taken yet against the buffer bound, and, with a
    spool, acknowledges only what is written there."""

    conn = None

    def __init__(self, source: MqttSource, worker_index: int, spool: Spool | None, taken, stats,
                 expect_session: bool) -> None:
        self.spool = spool
        self.stats = stats  # the shared array the flow copies its metrics from
        self.taken = taken  # messages the worker has taken from the pipe (shared memory)
        # Admitted into the inbox, ever: minus what the worker took, what waits for the flow.
        self.admitted = 0
        self.expect_session = expect_session
        super().__init__(source, worker_index)

    def fail(self, where: str, message: str) -> NoReturn:
        try:
            if self.conn is not None:
                self.conn.send_bytes(pickle.dumps((_FAILED, where, message)))
        finally:
            os._exit(1)

    def _room(self) -> bool:
        return self.admitted - self.taken.value < self.src.max_buffered

    @staticmethod
    def _stamp(topic: str, payload: bytes) -> tuple[str, bytes, float]:
        # What the worker gets, as is: no record and no datetime per message here, where the
        # client is the drain's limit (pickling a datetime alone costs more than the tuple).
        return topic, payload, time.time()

    def _admit(self, msg: tuple[str, bytes, float], mid: int, qos: int) -> None:
        end = self.spool.append_record(encode_parts(*msg)) if self.spool is not None else 0
        if mid:
            self.client.ack(mid, qos)
        self.inbox.put((msg, end))
        self.admitted += 1  # under the lock, as every _admit

    def _hold(self, msg: RawMessage, mid: int, qos: int) -> None:
        pausing = self.paused_since is None
        super()._hold(msg, mid, qos)
        # At once, not at the next publish_stats: a pause is what an operator looks for.
        self.stats[_HELD] = len(self.held)
        if pausing and self.paused_since is not None:
            self.stats[_PAUSES] += 1

    def take_batch(self, first, limit: int) -> tuple[list, int | None]:
        """``first`` and up to ``limit - 1`` more, as sent to the worker, with the spool offset
        after the last (None without a spool)."""
        items = [first, *self._drain(limit - 1)]
        self.received += len(items)  # for its stop line
        end = items[-1][1] if self.spool is not None else None
        return [m for m, _ in items], end

    def publish_stats(self) -> None:
        """The child's metrics into the shared array the flow reads (pauses: in ``_hold``)."""
        sample = REGISTRY.get_sample_value
        stats = self.stats
        stats[_BUFFERED] = self.admitted - self.taken.value
        stats[_HELD] = len(self.held)
        dropped = sample("shems_broker_dropped_messages")
        stats[_DROPPED] = -1.0 if dropped is None or self.src.dropped_seen is None else dropped
        stats[_DROPPED_SEEN] = sample("shems_broker_dropped_messages_seen_total") or 0.0
        stats[_SESSIONS_LOST] = sample("shems_mqtt_sessions_lost_total") or 0.0


# The receiver's lock, held around every spool append: an exit waits for the one in progress,
# so the spool never ends in half a record.
_admit_lock: threading.Lock | None = None


def _exit_now(code: int = 0) -> NoReturn:
    if _admit_lock is not None:
        _admit_lock.acquire(timeout=5)
    os._exit(code)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            _exit_now()  # the flow is gone: nobody reads, and the client id must be free
        time.sleep(0.5)


def _publish_stats(receiver: _ChildReceiver) -> None:
    while True:
        try:
            receiver.publish_stats()
        except Exception:  # noqa: BLE001 - metrics must never stop the client
            pass
        time.sleep(_STATS_S)


def child_main(settings: dict, worker_index: int, conn, stop, parent_pid: int, taken, stats,
               spool_dir: str | None = None, dropped_state: str | None = None,
               expect_session: bool = False) -> None:
    """The child process: connect, then forward the inbox in batches until told to stop."""
    from pipeline.logs import configure

    configure()  # as `shems run` does: same stream, same format
    # Ctrl-C reaches the whole process group: the flow stops its children itself, after taking
    # what they hold, so a signal must not end a child first (nor print its traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    spool = None
    if spool_dir is not None:
        try:
            spool = Spool(Path(spool_dir), lock_wait_s=_SPOOL_WAIT_S)
        except OSError as exc:
            conn.send_bytes(pickle.dumps((_FAILED, "spool", f"cannot open the spool: {describe(exc)}")))
            os._exit(1)
        if os.getppid() != parent_pid:
            os._exit(0)  # the child of a killed flow, late: its successor owns the spool's end
    source = MqttSource(**settings)
    source.dropped_state = Path(dropped_state) if dropped_state else None
    _ChildReceiver.conn = conn
    receiver = _ChildReceiver(source, worker_index, spool, taken, stats, expect_session)
    global _admit_lock
    _admit_lock = receiver.lock
    threading.Thread(target=_publish_stats, args=(receiver,), daemon=True).start()
    conn.send_bytes(pickle.dumps((_READY,)))
    inbox, batch_max = receiver.inbox, settings["batch_max"]
    try:
        while not stop.value:
            try:
                first = inbox.get(timeout=0.05)
            except queue.Empty:
                if receiver.held:
                    receiver._release_held()  # the worker may have taken some since
                continue
            # A moment for a batch to gather: forwarding a few messages at a time costs a pipe
            # write and two GIL hand-overs each time (paho's thread and this one).
            time.sleep(_GATHER_S)
            conn.send_bytes(pickle.dumps(receiver.take_batch(first, batch_max),
                                         protocol=pickle.HIGHEST_PROTOCOL))
        receiver._shutdown()  # a plain DISCONNECT: the session stays
        # Anything acknowledged before the disconnect is ours: hand it on, then say so.
        try:
            first = inbox.get_nowait()
        except queue.Empty:
            pass
        else:
            conn.send_bytes(pickle.dumps(receiver.take_batch(first, sys.maxsize),
                                         protocol=pickle.HIGHEST_PROTOCOL))
        conn.send_bytes(pickle.dumps(None))
    except (BrokenPipeError, EOFError, OSError):
        _exit_now()  # the flow is gone
    if spool is not None:
        spool.close()
    conn.close()


class ProcessMqttSource(MqttSource):
    """:class:`MqttSource` whose partitions run their client in a process of their own."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition:
        return ProcessMqttPartition(self, worker_index)


class SpooledProcessMqttSource(SpooledMqttSource):
    """:class:`SpooledMqttSource` whose partitions run their client, the spool's writer, in a
    process of their own."""

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> StatefulSourcePartition:
        self.settings.dropped_state = self.spool_root / "broker_dropped"
        directory = self.spool_root / f"part-{for_part}"
        try:
            wait_for_writer(directory, _SPOOL_WAIT_S)  # a killed flow's client process, exiting
            spool = Spool(directory, writer=False)
        except SpoolBusy as exc:
            exit_now("spool", f"{exc} (a client process of an earlier flow still runs?)")
        except OSError as exc:
            exit_now("spool", f"cannot open the spool in {self.spool_root}: {describe(exc)}")
        return SpooledProcessMqttPartition(self.settings, int(for_part), spool, resume_state or 0)


class _ProcessFed(BatchPacing):
    """A worker's source partition fed by its client process."""

    def _start_child(self, source: MqttSource, worker_index: int, spool_dir: Path | None = None,
                     expect_session: bool = False) -> None:
        self.src = source
        self.worker = str(worker_index)
        self.worker_index = worker_index
        metrics.set_worker(self.worker)
        self._received = metrics.MESSAGES_RECEIVED.labels(worker=self.worker)
        ctx = multiprocessing.get_context("spawn")  # never fork a process running Bytewax's threads
        self.conn, child_end = ctx.Pipe(duplex=False)
        # Shared memory, not an Event: a semaphore left by a flow that exits at once (os._exit)
        # makes multiprocessing's resource tracker print a warning after the flow's last line.
        self.stop = ctx.RawValue("b", 0)
        self.taken = ctx.RawValue("q", 0)
        self.stats = ctx.RawArray("d", _STATS_LEN)
        self.stats[_DROPPED] = -1.0
        dropped = source.dropped_state
        self.proc = ctx.Process(
            target=child_main, name=f"shems-mqtt-{worker_index}", daemon=True,
            args=(_settings_for_child(source), worker_index, child_end, self.stop, os.getpid(),
                  self.taken, self.stats, str(spool_dir) if spool_dir is not None else None,
                  str(dropped) if dropped is not None and spool_dir is not None else None,
                  expect_session))
        self.proc.start()
        child_end.close()
        self.last_message_mono = time.monotonic()
        self.next_tick_mono = 0.0
        self.stopping = False
        self.finished = False
        self.received = 0
        self.pending: deque[tuple[list, int | None]] = deque()  # read at the stop, not handed on
        self.emitted = 0
        self._wait_ready()
        threading.Thread(target=self._copy_stats, name=f"shems-mqtt-stats-{worker_index}",
                         daemon=True).start()

    def _wait_ready(self) -> None:
        if not self.conn.poll(self.src.connect_timeout_s + _STARTUP_GRACE_S + _SPOOL_WAIT_S):
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

    def _copy_stats(self) -> None:
        """The child's gauges and counters into this process's metrics, four times a second."""
        labels = {"worker": self.worker}
        buffered = metrics.SOURCE_BUFFERED.labels(**labels)
        held = metrics.SOURCE_HELD.labels(**labels)
        pauses = metrics.SOURCE_PAUSES.labels(**labels)
        seen = [0.0] * _STATS_LEN
        counters: list[tuple[int, Any]] = [(_PAUSES, pauses), (_DROPPED_SEEN, metrics.BROKER_DROPPED_SEEN),
                                           (_SESSIONS_LOST, metrics.MQTT_SESSIONS_LOST)]
        while not self.finished:
            stats = list(self.stats)
            buffered.set(stats[_BUFFERED])
            held.set(stats[_HELD])
            if stats[_DROPPED] >= 0:
                metrics.BROKER_DROPPED_MESSAGES.set(stats[_DROPPED])
            for i, counter in counters:
                if stats[i] > seen[i]:
                    counter.inc(stats[i] - seen[i])
                    seen[i] = stats[i]
            time.sleep(_STATS_S)

    def _recv(self, wait: float) -> tuple[list, int | None] | None:
        """One batch from the child, or None (nothing within ``wait``, or the child is done)."""
        if self.finished:
            return None
        try:
            if not self.conn.poll(wait):
                return None
            chunk = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            if not self.stopping:
                exit_now("mqtt", f"the MQTT client process ended (exit code {self.proc.exitcode}): "
                                 f"{describe(exc)}")
            self.finished = True
            return None
        if chunk is None:
            self.finished = True
        return chunk

    def _read(self, limit: int) -> list[RawMessage]:
        """Whole batches from the child, up to about ``limit`` messages."""
        out: list[RawMessage] = []
        while len(out) < limit:
            if self.pending:
                rows, end = self.pending.popleft()
            else:
                chunk = self._recv(0.0)
                if chunk is None:
                    break
                rows, end = chunk
                self.taken.value += len(rows)  # room in the child's bound
            out.extend(RawMessage(topic, payload, datetime.fromtimestamp(at, timezone.utc))
                       for topic, payload, at in rows)
            if end is not None:
                self.emitted = end
        return out

    def _take(self, limit: int) -> list[SourceItem]:
        return list(self._read(limit))

    def _next_batch(self) -> Iterable[SourceItem]:
        batch = self._take(self.src.batch_max)
        now = time.monotonic()
        if self.stopping or self._should_stop(now, idle=not batch):
            self._shutdown()
            batch.extend(self._take(sys.maxsize))
            self._count(batch, now)
            if not batch:
                raise StopIteration()
            return batch
        self._count(batch, now)
        return self._with_tick(batch, now)

    def next_awake(self) -> datetime | None:
        if self.pending or self.conn.poll():
            return None
        return datetime.now(timezone.utc) + timedelta(milliseconds=5)

    def _shutdown(self) -> None:
        """Stop the child and keep what it still sends (what it acknowledged before its
        DISCONNECT, then the end marker) for the next batches."""
        if self.stopping:
            return
        self.stopping = True
        self.stop.value = 1
        deadline = time.monotonic() + 30
        while not self.finished and time.monotonic() < deadline:
            chunk = self._recv(0.2)
            if chunk is not None:
                self.pending.append(chunk)
        self.finished = True
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
        log.info("mqtt_source_stopped", worker=self.worker,
                 received=self.received + sum(len(rows) for rows, _ in self.pending), process=True)

    def close(self) -> None:
        self._shutdown()
        self.conn.close()


class ProcessMqttPartition(_ProcessFed, StatelessSourcePartition):
    """Fed by a client process that acknowledges once buffered (at most once on a crash)."""

    def __init__(self, source: MqttSource, worker_index: int) -> None:
        self._start_child(source, worker_index)


class SpooledProcessMqttPartition(SpoolReplay, _ProcessFed, StatefulSourcePartition):
    """Fed by a client process that writes the spool; replays it from the snapshot's offset
    first, then resumes from the offset after the last batch handed on."""

    def __init__(self, source: MqttSource, index: int, spool: Spool, resume_offset: int) -> None:
        self._start_replay(index, spool, resume_offset)
        # Anything in the spool means an earlier run subscribed: the broker should know us.
        self._start_child(source, index, spool.dir, expect_session=spool.end > 0)
        self.emitted = resume_offset

    def _take(self, limit: int) -> list[SourceItem]:
        if self.replaying:
            out = self._take_replay(1 if self.guard.careful else limit)
            if out:
                return out
        return self._screen(self._read(limit))

    def next_awake(self) -> datetime | None:
        return None if self.replaying else super().next_awake()

    def close(self) -> None:
        super().close()
        self._close_spool()
