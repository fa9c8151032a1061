"""One record the store refuses never costs the rest of its batch, and the store's own errors are
told apart: against real SQLite and real PostgreSQL, through the flow's StoreWriter."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import secrets
from datetime import datetime, timedelta, timezone

import pytest

from pipeline import metrics
from pipeline.records import (
    AckStatus,
    CommandAck,
    CommandState,
    DeadLetter,
    DeviceKind,
    DeviceWindow,
    ForecastScore,
    HomeWindow,
    LateReading,
    Reading,
    Source,
)
from sinks.base import Batch, StoreError, StoreUnavailable
from sinks.stores import open_store
from sinks.writer import StoreWriter

T0 = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)


def reading(home: str, device: str, i: int, power: float = 100.0) -> Reading:
    return Reading(home, device, T0 + timedelta(seconds=10 * i), power, None, 230.0, None,
                   DeviceKind.APPLIANCE, Source.NATIVE)


def window(home: str, device: str, minute: int, samples: int = 6, mean: float = 100.0) -> DeviceWindow:
    return DeviceWindow(home, device, DeviceKind.APPLIANCE, T0 + timedelta(minutes=minute), mean, 90.0,
                        110.0, 1.5, samples)


def good_batch() -> Batch:
    readings = [reading(f"h{h}", f"d{d}", i, 100.0 + i) for h in range(3) for d in range(2) for i in range(5)]
    return Batch(
        readings=readings,
        device_windows=[window(f"h{h}", "d0", 0) for h in range(3)],
        home_windows=[HomeWindow("h0", T0, 200.0, 180.0, 220.0, 3.0, 12)],
        late_readings=[LateReading(readings[0], T0)],
        command_acks=[CommandAck("h0", "d0", "cmd-1", AckStatus.APPLIED, CommandState.ON, T0, T0)],
    )


# Records each store refuses, with the error code its dead letter must carry. Each is a record the
# flow could be handed by a hostile device or by a bug upstream.
def _ack(**changes) -> CommandAck:
    return dataclasses.replace(CommandAck("h1", "d0", "cmd-2", AckStatus.APPLIED, CommandState.ON, T0, T0),
                               **changes)


def _poison_common() -> list[tuple[str, str, object]]:
    return [
        ("UnicodeEncodeError", "readings", reading("h\ud800", "d0", 1)),  # a lone surrogate
    ]


def _no_time() -> Reading:
    return dataclasses.replace(reading("hbad", "d0", 1), ts=None)


def _poison_postgres() -> list[tuple[str, str, object]]:
    return _poison_common() + [
        # a 10,000-character home id: "index row requires 10024 bytes"
        ("program_limit_exceeded", "readings", reading(secrets.token_hex(5000), "d0", 1)),
        ("character_not_in_repertoire", "readings", reading("h1", "a\x00b", 1)),  # NUL in text
        # psycopg would silently wrap it to -2147483648; it is refused instead
        ("OverflowError", "device_windows", window("h1", "dbig", 0, samples=2**31)),
        ("numeric_value_out_of_range", "forecast_scores",
         ForecastScore("h1", 60, 60, "linear", 2**40, 1.0, 1.0, 1.0, 0.9, T0)),
        ("not_null_violation", "command_acks", _ack(message=None)),
        ("not_null_violation", "readings", _no_time()),
    ]


def _poison_sqlite() -> list[tuple[str, str, object]]:
    return _poison_common() + [
        # NaN is NULL to SQLite: before, INSERT OR IGNORE dropped such a reading without a trace
        ("sqlite_constraint_notnull", "readings", reading("h1", "dnan", 1, power=float("nan"))),
        ("sqlite_constraint_notnull", "device_windows", window("h1", "dnan", 0, mean=float("nan"))),
        ("OverflowError", "device_windows", window("h1", "dbig", 0, samples=2**63)),
        ("sqlite_constraint_notnull", "command_acks", _ack(message=None)),
        ("TypeError", "readings", _no_time()),  # refused while building its row
    ]


def _interleave(batch: Batch, poison: list[tuple[str, str, object]]) -> Batch:
    """The good batch with each poisonous record placed amid the good ones of its list."""
    out = dataclasses.replace(batch, **{f.name: list(getattr(batch, f.name)) for f in dataclasses.fields(Batch)})
    for n, (_, field_name, record) in enumerate(poison):
        rows = getattr(out, field_name)
        rows.insert((n * 7) % (len(rows) + 1), record)
    return out


def test_a_batch_with_poisonous_rows_stores_every_good_row_once_and_dead_letters_the_rest(store):
    poison = _poison_sqlite() if store.url.startswith("sqlite") else _poison_postgres()
    writer = StoreWriter(store, worker="iso")
    dead_before = metrics.DEAD_LETTERS.labels(worker="iso", reason="sink")._value.get()

    refused = writer.write(_interleave(good_batch(), poison))

    assert sorted((d.error, d.reason.split(":")[0]) for d in refused) == \
        sorted((code, field_name) for code, field_name, _ in poison)
    expected = good_batch()
    assert store.readings() == sorted(expected.readings, key=lambda r: (r.home_id, r.device_id, r.ts))
    assert store.device_windows() == sorted(expected.device_windows, key=lambda w: (w.home_id, w.device_id))
    assert store.home_windows() == expected.home_windows
    counts = store.counts()
    assert counts["late_readings"] == 1 and counts["devices"] == 6 and counts["dead_letter"] == len(poison)
    stored = store.dead_letters()
    assert sorted(d.error for d in stored) == sorted(code for code, _, _ in poison)
    by_payload_kind = sorted((d.error, d.reason.split(":")[0], d.payload.split("(")[0]) for d in stored)
    assert by_payload_kind == sorted((code, field_name, type(record).__name__) for code, field_name, record in poison)
    for letter in stored:
        assert letter.step == "sink" and len(letter.reason) > 20
        assert len(letter.topic) <= 513 and len(letter.payload) <= 4097
        assert letter.payload_bytes >= len(letter.payload.encode("utf-8", "replace")) // 2
        assert len(letter.payload_sha256) == 64
    assert metrics.DEAD_LETTERS.labels(worker="iso", reason="sink")._value.get() - dead_before == len(poison)

    # Written again (a replay after a restart): no good row doubles, and only the refused records
    # without a time of their own (ts=None) are dead-lettered a second time.
    writer.write(_interleave(good_batch(), poison))
    assert store.counts()["readings"] == len(expected.readings)
    assert store.counts()["dead_letter"] == len(poison) + 1
    assert store.readings() == sorted(expected.readings, key=lambda r: (r.home_id, r.device_id, r.ts))


def test_the_long_home_id_names_its_device_in_the_dead_letter(pg_url):
    store = open_store(pg_url)
    store.migrate()
    home = secrets.token_hex(5000)
    writer = StoreWriter(store)
    writer.write(Batch(readings=[reading(home, "plug-7", 0), reading("h1", "d1", 0)]))
    [letter] = store.dead_letters()
    assert letter.error == "program_limit_exceeded" and "index row requires" in letter.reason
    assert letter.topic.startswith(home[:500]) and len(letter.topic) == 513  # clipped, with an ellipsis
    assert [r.home_id for r in store.readings()] == ["h1"]
    store.close()


def test_a_refused_reading_at_either_end_of_a_batch_is_isolated_too(store):
    """The first and last readings of a batch feed the lag metric: a refused one there must not
    break the write after it was dead-lettered."""
    good = [reading("h1", "d1", i) for i in range(4)]
    refused = StoreWriter(store).write(Batch(readings=[_no_time(), *good, _no_time()]))
    assert len(refused) == 2 and {d.step for d in refused} == {"sink"}
    assert store.readings() == good and store.counts()["dead_letter"] == 2


def test_the_dead_letter_table_takes_any_topic_and_payload(store):
    """A dead letter built without DeadLetter.of (so unclipped) with a 100 KB topic, NULs and a
    lone surrogate: stored in the plain write path, bounded, and its unique index still fits."""
    topic = "shems/" + "\x00\u00e9\U0001f600" * 34_000 + "/reading"
    payload = "{\x00" + "\ud800" + "x" * 200_000
    # 4-byte characters that do not compress: the largest index entry a clipped topic can make
    rng = random.Random(7)
    widest = "".join(chr(0x1F300 + rng.randrange(0x2FF)) for _ in range(25_000))
    letters = [DeadLetter(T0, topic, payload, "r\x00" * 5000, step="decode", error="e\x00"),
               DeadLetter(T0, topic, payload, "a second reason for the same message: kept too"),
               DeadLetter(T0 + timedelta(seconds=1), widest, "p", "widest topic")]
    store.write(Batch(dead_letters=letters))
    store.write(Batch(dead_letters=letters))
    stored, second_reason, widest_stored = store.dead_letters()  # the second write, a replay, adds none
    assert second_reason.reason == letters[1].reason and second_reason.payload_sha256 == stored.payload_sha256
    assert widest_stored.topic.startswith(widest[:512]) and len(widest_stored.topic) == 513
    assert len(stored.topic) <= 513 and len(stored.payload) <= 4097 and len(stored.reason) <= 1001
    assert stored.topic.startswith("shems/") and stored.payload.startswith("{")
    # the hash is of the whole original, so the clipped row still identifies it
    assert stored.payload_sha256 == hashlib.sha256(payload.encode("utf-8", "replace")).hexdigest()


def test_an_error_that_is_not_about_a_row_is_one_clear_store_error(store):
    writer = StoreWriter(store)
    with store.transaction():
        store.conn.execute("DROP TABLE late_readings")
    batch = good_batch()
    with pytest.raises(StoreError) as caught:
        writer.write(batch)
    message = str(caught.value)
    assert "\n" not in message and "late_readings" in message
    assert store.readings() == []  # rolled back: nothing half-written, and the store still usable


def test_an_unreachable_postgres_at_start_is_store_unavailable_within_the_deadline():
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        from sinks.postgres import PostgresStore
        PostgresStore(f"postgresql://postgres:s3cret@127.0.0.1:{port}/x", startup_timeout_s=3)
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 10
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message and "unreachable" in message


def test_a_refused_login_is_a_store_error_at_once(pg_url):
    import time

    url = pg_url.replace("postgres@", "no_such_role_x@")
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert not isinstance(caught.value, StoreUnavailable)
    assert time.monotonic() - started < 5
    assert "no_such_role_x" in str(caught.value) and "\n" not in str(caught.value)


def test_a_server_that_accepts_but_never_answers_is_a_timeout_not_a_hang():
    """A TCP listener that never speaks (a hung server, a black-holed proxy): connect_timeout from
    the URL's query bounds each attempt, and start-up gives up with StoreUnavailable."""
    import socket
    import time

    from sinks.postgres import PostgresStore

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timeout"):
            PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=2", startup_timeout_s=1)
        assert 1.5 <= time.monotonic() - started < 8
