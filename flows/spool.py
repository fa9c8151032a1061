"""A local append-only log of received MQTT messages, so a killed flow loses nothing.

With ``--recovery-dir``, the source acknowledges a QoS 1 message to the broker only after it is
written here. Bytewax snapshots the source as the spool offset of the next message not yet handed
to the flow; after a crash (even SIGKILL) the flow resumes from its last snapshot and the source
re-emits every message after that offset. Windows are rebuilt from the snapshot, the same
messages flow through them again, and the stores ignore readings they already have: exactly once.

Writes go to the OS page cache (no fsync per message): that survives the death of the process,
which is what the spool is for; a power cut can lose the last moments, as it would in the broker.

Record layout: ``u32 length | f64 received_at (epoch s) | u16 topic length | topic | payload``.
Segments are named by the offset of their first byte and deleted once every snapshot that could
still be resumed from is past them.

A message that kills the process (a crash no guard can catch: the OOM killer, a segfault in a
native library) would be replayed from the spool on every start, for ever. The :class:`CrashGuard`
beside each partition's spool counts the starts from one resume offset. After
``CAREFUL_AFTER_STARTS`` starts from the same offset that all died, the next start replays that
range one message at a time and records which message is in hand; if the process dies again, the
start after that dead-letters that message (step ``replay``, error ``crashed_worker``) and goes on.
It also remembers the message by content: the broker delivers a copy again when the ack of the
first had not left the process before it died, and every copy is dead-lettered on sight.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pipeline.records import DeadLetter, RawMessage

_HEAD = struct.Struct("<IdH")
SEGMENT_BYTES = 64 * 1024 * 1024
# Bytewax resumes from the newest epoch every worker has committed, a few epochs back at most;
# keep spool behind the last this-many snapshots.
KEEP_SNAPSHOTS = 20


def encode(msg: RawMessage) -> bytes:
    return encode_parts(msg.topic, msg.payload, msg.received_at.timestamp())


def encode_parts(topic: str, payload: bytes, received_s: float) -> bytes:
    """A record of a message not made a :class:`RawMessage` (the client process's)."""
    encoded = topic.encode()
    body = _HEAD.pack(0, received_s, len(encoded)) + encoded + payload
    return struct.pack("<I", len(body) - 4) + body[4:]


WRITER_LOCK = "writer.lock"


class SpoolBusy(OSError):
    """Another process still writes this spool."""


def _lock(directory: Path, wait_s: float) -> int:
    """An exclusive lock on the spool's writer lock file, waiting up to ``wait_s``: one writer at
    a time, and a writer left behind by a killed flow (its MQTT client process, which notices
    within a second) is gone before anyone takes the spool's end."""
    fd = os.open(directory / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise SpoolBusy(f"another process still writes the spool in {directory}") from None
            time.sleep(0.05)


def wait_for_writer(directory: Path, wait_s: float = 10.0) -> None:
    """Returns once no process writes the spool in ``directory`` (SpoolBusy after ``wait_s``)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.close(_lock(directory, wait_s))  # closing the descriptor releases the lock


class Spool:
    """One writer and reader per source partition; offsets are global byte positions.

    The writer holds a lock on the directory for its life. With ``writer=False`` (a flow whose
    MQTT client process writes the spool: flows/mqtt_process.py) the spool is only read and
    pruned: call :func:`wait_for_writer` first, so the end read here is final until a new writer
    starts."""

    def __init__(self, directory: Path, writer: bool = True, lock_wait_s: float = 10.0) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock_fd = _lock(directory, lock_wait_s) if writer else -1
        segments = self._segments()
        if segments:
            start = segments[-1]
            self.end = start + self._path(start).stat().st_size
        else:
            start = self.end = 0
        self.current_start = start if writer else -1  # a reader may prune any but the last
        self.file = open(self._path(start), "ab", buffering=0) if writer else None
        self.snapshots: list[int] = []

    def _path(self, start: int) -> Path:
        return self.dir / f"{start:020d}.spool"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.spool"))

    def append(self, msg: RawMessage) -> int:
        """Write one message; returns the offset just after it."""
        return self.append_record(encode(msg))

    def append_record(self, record: bytes) -> int:
        """Write one record made by :func:`encode` or :func:`encode_parts`."""
        assert self.file is not None, "a read-only spool"
        if self.end - self.current_start + len(record) > SEGMENT_BYTES and self.end > self.current_start:
            self.file.close()
            self.current_start = self.end
            self.file = open(self._path(self.current_start), "ab", buffering=0)
        self.file.write(record)  # unbuffered: in the page cache before the broker gets its ack
        self.end += len(record)
        return self.end

    def read_from(self, offset: int, until: int) -> Iterator[tuple[RawMessage, int]]:
        """Messages between two offsets, each with the offset just after it."""
        for start in self._segments():
            seg_end = start + self._path(start).stat().st_size
            if seg_end <= offset or start >= until:
                continue
            with open(self._path(start), "rb") as f:
                pos = max(offset, start)
                f.seek(pos - start)
                while pos < min(until, seg_end):
                    (length,) = struct.unpack("<I", f.read(4))
                    body = f.read(length)
                    _, received, topic_len = _HEAD.unpack(b"\0\0\0\0" + body[: _HEAD.size - 4])
                    rest = body[_HEAD.size - 4 :]
                    pos += 4 + length
                    yield RawMessage(
                        rest[:topic_len].decode(),
                        rest[topic_len:],
                        datetime.fromtimestamp(received, timezone.utc),
                    ), pos

    def snapshotted(self, offset: int) -> None:
        """Record a snapshot offset and delete segments no resumable snapshot needs."""
        self.snapshots.append(offset)
        if len(self.snapshots) <= KEEP_SNAPSHOTS:
            return
        oldest_needed = self.snapshots.pop(0)
        segments = self._segments()
        # Never the last segment (a following one exists): the only one a writer appends to.
        for start, following in zip(segments, segments[1:]):
            if following <= oldest_needed and start != self.current_start:
                os.unlink(self._path(start))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


# Starts from one resume offset that may die before the replay goes one message at a time.
CAREFUL_AFTER_STARTS = 2
# Messages that killed the process, remembered by content: the broker may deliver a copy again
# (the ack of the first may not have left the process before it died).
POISON_KEPT = 16
_GUARD_RECORD = 4096  # bytes: the guard file is rewritten in place, one record


def message_digest(msg: RawMessage) -> str:
    """Identifies a message by content (topic and payload), whichever copy of it this is."""
    h = hashlib.sha256(msg.topic.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(msg.payload)
    return h.hexdigest()


class CrashGuard:
    """What earlier starts of one spool partition tried (``attempts`` next to its segments):
    ``{"resume": offset started from, "starts": how many starts from it, "in_hand": offset of the
    message being handled in a careful replay, or null, "poison": digests of messages that killed
    the process}``. Lost with the page cache on a power cut, which only costs one more careful
    replay."""

    FILE = "attempts"

    def __init__(self, directory: Path, resume: int, spool_end: int,
                 careful_after: int = CAREFUL_AFTER_STARTS) -> None:
        self.path = directory / self.FILE
        before = self._load()
        in_hand = before.get("in_hand")
        # A message in hand when a careful replay died, and not yet behind a snapshot.
        self.crashed: int | None = in_hand if isinstance(in_hand, int) and in_hand >= resume else None
        poison = before.get("poison")
        self.poison: list[str] = [p for p in poison if isinstance(p, str)] if isinstance(poison, list) else []
        if resume < spool_end:
            self.starts = before.get("starts", 0) + 1 if before.get("resume") == resume else 1
        else:
            self.starts = 0  # nothing to replay: nothing can crash us from here
        self.resume = resume
        self.careful = self.starts > careful_after or self.crashed is not None
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.in_hand: int | None = None
        self._write()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_bytes().rstrip(b"\0 \n") or b"{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        record = json.dumps({"resume": self.resume, "starts": self.starts, "in_hand": self.in_hand,
                             "poison": self.poison})
        # One pwrite of a fixed-size record: the file is never seen half old, half new.
        os.pwrite(self.fd, record.encode().ljust(_GUARD_RECORD), 0)

    def handing(self, offset: int) -> None:
        """The message starting at ``offset`` is about to be handed to the flow."""
        self.in_hand = offset
        self._write()

    def settled(self) -> None:
        """The careful replay is over, or the flow stopped or exited deliberately: nothing in hand
        is to blame."""
        if self.fd >= 0:
            self.in_hand = None
            self._write()

    def is_poison(self, msg: RawMessage) -> bool:
        """A copy of a message that killed the process before."""
        return bool(self.poison) and message_digest(msg) in self.poison

    def dead_letter(self, msg: RawMessage) -> DeadLetter:
        """The dead letter of the message in hand at a crash (or of a copy of one); from now on
        every copy of it is refused."""
        digest = message_digest(msg)
        if digest not in self.poison:
            self.poison = (self.poison + [digest])[-POISON_KEPT:]
            if self.fd >= 0:
                self._write()
        return DeadLetter.of(
            msg.received_at, msg.topic, msg.payload,
            f"the process died while handling this message ({self.starts} starts from spool "
            f"offset {self.resume} died before); it and any copy of it are not handed on again",
            step="replay", error="crashed_worker")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
