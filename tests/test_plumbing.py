"""Pure parts of the edges: URL parsing, CLI errors, sink batching, the spool."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from flows import spool as spool_mod
from flows.spool import Spool
from pipeline.config import parse_mqtt_url
from pipeline.records import DeadLetter, RawMessage, Reading, Tick
from sinks.base import mask_url
from sinks.writer import BatchBuffer

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_parse_mqtt_url_and_masking():
    ep = parse_mqtt_url("mqtt://alice:s3cret@broker.example:1884")
    assert (ep.host, ep.port, ep.username, ep.password, ep.tls) == ("broker.example", 1884, "alice", "s3cret", False)
    assert "s3cret" not in str(ep) and "s3cret" not in repr(ep)
    assert parse_mqtt_url("mqtts://h").port == 8883
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url("http://h")
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert parse_mqtt_url("mqtt://[::1]:1884").host == "::1"
    for host in ("ho st", "h\u00e9llo", "a;b", "a\x00b"):  # 'ho st' was dialled for the whole startup timeout
        with pytest.raises(ValueError, match="invalid host"):
            parse_mqtt_url(f"mqtt://u:p@{host}:1883")


@pytest.mark.parametrize("args, message", [
    (["run", "--mqtt-url", "http://x"], "must start with mqtt://"),
    (["run", "--store-url", "mysql://x"], "unsupported store URL"),
    (["run", "--idle-exit", "-3"], "expected a number > 0"),
    (["run", "--metrics-port", "70000"], "port must be 1-65535"),
    (["run", "--registry", "/nonexistent.toml"], "no such file"),
])
def test_bad_cli_arguments_exit_nonzero_with_a_reason(args, message):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_env_variables_are_flag_defaults(monkeypatch):
    from pipeline.cli import build_parser

    monkeypatch.setenv("SHEMS_STORE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("SHEMS_IDLE_EXIT", "7")
    args = build_parser().parse_args(["run"])
    assert args.store_url == "sqlite:///from-env.db" and args.idle_exit == 7.0
    args = build_parser().parse_args(["run", "--store-url", "sqlite:///flag.db"])
    assert args.store_url == "sqlite:///flag.db"


def test_batch_buffer_flushes_by_size_and_by_age():
    clock = [0.0]
    buf = BatchBuffer(batch_rows=3, flush_interval_s=0.5, clock=lambda: clock[0])
    reading = Reading("h", "d", NOW, 1.0)
    buf.add([reading, Tick(NOW)])
    assert not buf.due() and buf.rows == 1
    clock[0] = 0.6
    assert buf.due()
    batch = buf.take()
    assert batch.readings == [reading] and buf.rows == 0 and not buf.due()
    buf.add([reading, reading, DeadLetter(NOW, "t", "p", "r")])
    assert buf.due()  # by size, with no time passed
    with pytest.raises(TypeError):
        buf.add([object()])


def test_spool_round_trip_rotation_and_pruning(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 256)
    monkeypatch.setattr(spool_mod, "KEEP_SNAPSHOTS", 2)
    spool = Spool(tmp_path)
    msgs = [RawMessage(f"shems/h/d{i}/reading", b'{"power_w": %d}' % i, NOW) for i in range(40)]
    ends = [spool.append(m) for m in msgs]
    assert len(list(tmp_path.glob("*.spool"))) > 3
    replayed = list(spool.read_from(ends[9], ends[-1]))
    assert [m for m, _ in replayed] == msgs[10:]
    assert replayed[-1][1] == ends[-1]
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.end == ends[-1]
    for offset in (ends[5], ends[30], ends[35], ends[39]):
        reopened.snapshotted(offset)
    # Segments wholly before the oldest snapshot still kept (ends[30]) are gone; the rest remain.
    assert [m for m, _ in reopened.read_from(ends[30], ends[-1])] == msgs[31:]
    assert min(int(p.stem) for p in tmp_path.glob("*.spool")) > 0


def test_one_spool_writer_at_a_time_and_a_reader_waits_for_the_last_one(tmp_path):
    """A killed flow's client process may still append for a moment: a second writer is refused
    while it lives, and a reader that waits for it sees where the spool really ends."""
    from flows.spool import SpoolBusy, wait_for_writer

    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from datetime import datetime, timezone; from pathlib import Path;"
         "from flows.spool import Spool; from pipeline.records import RawMessage;"
         "s = Spool(Path(sys.argv[1])); print('locked', flush=True); time.sleep(1.0);"
         "s.append(RawMessage('t/late', b'x', datetime.now(timezone.utc))); s.close()",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        with pytest.raises(SpoolBusy):
            Spool(tmp_path, lock_wait_s=0.2)
        wait_for_writer(tmp_path, 20.0)  # returns once the writer let go: after its append
    finally:
        writer.kill()
        writer.wait()
    reader = Spool(tmp_path, writer=False)
    assert [m.topic for m, _ in reader.read_from(0, reader.end)] == ["t/late"]
    reader.close()
    again = Spool(tmp_path, lock_wait_s=0.2)  # free again: the next writer gets it at once
    assert again.end == reader.end
    again.close()
