"""The store goes away, hangs or locks, and comes back: writes are retried for as long as it takes,
a failed attempt leaves nothing half-written, and every record is stored exactly once.

The outages are real: a private PostgreSQL cluster (tests/pgcluster.py) stopped and started by
the test, a lock held by another session, a backend terminated mid-transaction, a SQLite write
lock held by another connection."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from pipeline import metrics
from pipeline.records import DeviceKind, DeviceWindow, Forecast, HomeWindow, LateReading, Reading, Source
from sinks.base import Batch
from sinks.sqlite import SqliteStore
from sinks.stores import open_store
from sinks.writer import StoreWriter
from tests import pgcluster
from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.flowproc import FlowProcess, TestPublisher
from tests.pgcluster import PgCluster, wait_for

T0 = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)


def _readings(power: float = 100.0, n: int = 12) -> list[Reading]:
    return [Reading("h1", f"d{i % 3}", T0 + timedelta(seconds=10 * i), power + i, None, 230.0, None,
                    DeviceKind.APPLIANCE, Source.NATIVE) for i in range(n)]


def _counter(metric, worker: str) -> float:
    return metric.labels(worker=worker)._value.get()


def _write_in_thread(writer: StoreWriter, batch: Batch) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run():
        try:
            outcome.append(writer.write(batch))
        except BaseException as exc:  # surfaced by the test's assertion on outcome
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_postgres_write_that_times_out_or_loses_its_backend_is_rolled_back_and_retried(pg_url):
    """A lock held elsewhere makes each attempt hit statement_timeout mid-transaction (readings
    already inserted, late_readings waiting); then the backend is terminated mid-attempt. Nothing
    is visible until the lock goes, then everything is, once."""
    store = open_store(pg_url + "?options=-c%20statement_timeout%3D300ms")
    store.migrate()
    worker = f"pgretry-{uuid.uuid4().hex[:6]}"
    writer = StoreWriter(store, worker=worker, backoff_initial_s=0.05, backoff_max_s=0.3)
    readings = _readings()
    batch = Batch(readings=readings, late_readings=[LateReading(readings[0], T0)])
    with psycopg.connect(pg_url) as locker, psycopg.connect(pg_url, autocommit=True) as observer:
        locker.execute("LOCK TABLE late_readings IN ACCESS EXCLUSIVE MODE")
        thread, outcome = _write_in_thread(writer, batch)
        assert wait_for(lambda: _counter(metrics.STORE_RETRIES, worker) >= 3, 20)
        assert metrics.STORE_UNAVAILABLE.labels(worker=worker)._value.get() == 1
        assert observer.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        # the next attempt blocks on the lock again: end its backend under it
        assert wait_for(lambda: observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()").fetchone()[0] == 1, 10, 0.02)
        pid_before = store.conn.info.backend_pid
        observer.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "wait_event_type = 'Lock' AND datname = current_database()")
        time.sleep(0.5)
        assert observer.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        assert thread.is_alive()
        locker.rollback()  # the lock goes
        thread.join(20)
        assert outcome == [[]], outcome
        assert store.conn.info.backend_pid != pid_before  # it reconnected
        assert observer.execute("SELECT count(*) FROM readings").fetchone()[0] == 12
        assert observer.execute("SELECT count(*) FROM late_readings").fetchone()[0] == 1
    assert metrics.STORE_UNAVAILABLE.labels(worker=worker)._value.get() == 0
    assert sorted(r.power_w for r in store.readings()) == [r.power_w for r in readings]
    store.close()


def test_postgres_sessions_have_timeouts_by_default_and_the_url_overrides_them(pg_url):
    store = open_store(pg_url)
    params = store.conn.info.get_parameters()
    assert store.conn.execute("SHOW statement_timeout").fetchone()[0] == "1min"
    assert (params["connect_timeout"], params["keepalives"], params["keepalives_idle"],
            params["tcp_user_timeout"]) == ("10", "1", "30", "60000")
    store.reconnect()  # a new session gets them too
    assert store.conn.execute("SHOW statement_timeout").fetchone()[0] == "1min"
    store.close()
    store = open_store(pg_url + "?connect_timeout=3&keepalives_idle=7"
                                "&options=-c%20statement_timeout%3D1500ms")
    params = store.conn.info.get_parameters()
    assert (params["connect_timeout"], params["keepalives_idle"]) == ("3", "7")
    assert store.conn.execute("SHOW statement_timeout").fetchone()[0] == "1500ms"
    store.close()


def test_a_sqlite_write_waits_out_another_writers_lock_and_stores_once(sqlite_url, tmp_path):
    store = SqliteStore(sqlite_url, busy_timeout_s=0.1)
    store.migrate()
    worker = f"sqlretry-{uuid.uuid4().hex[:6]}"
    writer = StoreWriter(store, worker=worker, backoff_initial_s=0.05, backoff_max_s=0.2)
    other = sqlite3.connect(tmp_path / "shems.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    thread, outcome = _write_in_thread(writer, Batch(readings=_readings()))
    assert wait_for(lambda: _counter(metrics.STORE_RETRIES, worker) >= 3, 10)
    assert thread.is_alive()
    other.execute("COMMIT")
    thread.join(10)
    assert outcome == [[]], outcome
    assert store.counts()["readings"] == 12
    other.close()
    store.close()


def test_replays_with_different_values_keep_the_first_reading_and_the_last_aggregate(store):
    """Raw readings are first-write-wins (a redelivered message never rewrites history); every
    aggregate is replaced by its re-emission (a late reading amends its minute)."""
    writer = StoreWriter(store)
    window = DeviceWindow("h1", "d0", DeviceKind.APPLIANCE, T0, 100.0, 90.0, 110.0, 1.5, 6)
    home = HomeWindow("h1", T0, 100.0, 90.0, 110.0, 1.5, 6)
    forecast = Forecast("h1", T0, T0 + timedelta(hours=1), 60, 60, 300.0, 200.0, 400.0, "linear")
    writer.write(Batch(readings=_readings(100.0), device_windows=[window], home_windows=[home],
                       forecasts=[forecast]))
    writer.write(Batch(readings=_readings(555.0), device_windows=[window.__class__(
        "h1", "d0", DeviceKind.APPLIANCE, T0, 120.0, 80.0, 150.0, 2.0, 7)],
        home_windows=[HomeWindow("h1", T0, 120.0, 80.0, 150.0, 2.0, 7)],
        forecasts=[Forecast("h1", T0, T0 + timedelta(hours=1), 60, 60, 333.0, 222.0, 444.0, "linear")]))
    assert [r.power_w for r in store.readings()] == [100.0 + i for i in (0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11)]
    [w] = store.device_windows()
    assert (w.mean_power_w, w.min_power_w, w.max_power_w, w.energy_wh, w.samples) == (120.0, 80.0, 150.0, 2.0, 7)
    [h] = store.home_windows()
    assert (h.mean_power_w, h.samples) == (120.0, 7)
    [f] = store.forecasts()
    assert (f.yhat_w, f.lower_w, f.upper_w) == (333.0, 222.0, 444.0)
    assert store.counts()["readings"] == 12


# ------------------------------------------------------------------ a real flow, a real outage

OUTAGE_S = 30.0  # longer than the old writer's 8 attempts (~23 s)


def _publish(pub: TestPublisher, prefix: str, start: datetime, first: int, count: int,
             published: dict) -> None:
    """``count`` readings round-robin over 3 homes x 2 devices, one second apart per device."""
    for k in range(first, first + count):
        home, device, step = f"h{k % 3}", f"d{(k // 3) % 2}", k // 6
        ts = start + timedelta(seconds=step)
        power = float(k)
        pub.publish(f"{prefix}shems/{home}/{device}/reading", {"ts": ts.isoformat(), "power_w": power})
        published[(home, device, ts)] = power
    pub.flush()


def _stored(url: str) -> dict:
    with psycopg.connect(url, connect_timeout=3) as conn:
        rows = conn.execute("SELECT home_id, device_id, ts, power_w FROM readings").fetchall()
    return {(h, d, ts): p for h, d, ts, p in rows}


def _count(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    except psycopg.OperationalError:
        return -1


def run_outage(mqtt_url: str, topic_prefix: str, extra_args: list[str], outage_s: float,
               during: int, log=print) -> dict:
    """Run `shems run` against a private cluster, publish before, during and after an outage of
    ``outage_s`` seconds (cluster stopped with pg_ctl -m fast), and compare published with stored.
    Shared by the test below and tests/bench/outage.py."""
    cluster = PgCluster().init()
    flow = None
    try:
        cluster.start()
        url = cluster.create_database("shems_outage")
        flow = FlowProcess(mqtt_url, url, topic_prefix, extra_args + ["--no-insights"]).start()
        pub = TestPublisher(MQTT_HOST, MQTT_PORT)
        published: dict = {}
        start = (datetime.now(timezone.utc) - timedelta(minutes=30)).replace(microsecond=0)
        _publish(pub, topic_prefix, start, 0, 60, published)
        assert wait_for(lambda: _count(url) == 60, 30), "readings before the outage not stored"
        log(f"stopping PostgreSQL for {outage_s:.0f} s")
        stopped_at = time.monotonic()
        cluster.stop("fast")
        sent = 60
        # Readings keep arriving all through the outage, in small groups.
        steps = max(1, int(outage_s // 2))
        for i in range(steps):
            n = during // steps + (1 if i < during % steps else 0)
            _publish(pub, topic_prefix, start, sent, n, published)
            sent += n
            time.sleep(max(0.0, stopped_at + (i + 1) * outage_s / steps - time.monotonic()))
        exited_during = flow.proc.poll()
        cluster.start()
        log(f"PostgreSQL back after {time.monotonic() - stopped_at:.1f} s")
        _publish(pub, topic_prefix, start, sent, 60, published)
        sent += 60
        pub.close()
        complete = wait_for(lambda: _count(url) >= sent or flow.proc.poll() is not None, 120, 0.5) \
            and _count(url) >= sent
        stored = _stored(url)
        result = {
            "outage_s": round(outage_s, 1), "published": sent, "stored": len(stored),
            "lost": len(set(published) - set(stored)),
            "wrong_value": sum(1 for k, p in published.items() if k in stored and stored[k] != p),
            "unexpected": len(set(stored) - set(published)),
            "exited_during_outage": exited_during, "running_after": flow.proc.poll() is None,
            "complete": complete,
            "retry_lines": sum("store_write_retry" in line for line in flow.log_lines),
            "recovered_lines": [json.loads(line) for line in flow.log_lines if "store_recovered" in line],
        }
        try:
            result["exit_code"] = flow.stop(60)
        except RuntimeError:  # it had exited already, or failed to stop
            result["exit_code"] = flow.proc.returncode
        return result
    finally:
        if flow:
            flow.kill()
        cluster.remove()


@pytest.mark.skipif(not pgcluster.available(), reason="PostgreSQL server binaries not installed")
@pytest.mark.parametrize("recovery", [False, True], ids=["no-recovery", "recovery"])
def test_the_flow_rides_out_a_postgres_outage_and_stores_every_reading_once(recovery, mqtt_url,
                                                                          topic_prefix, tmp_path):
    extra = ["--recovery-dir", str(tmp_path / "recovery")] if recovery else []
    result = run_outage(mqtt_url, topic_prefix, extra, OUTAGE_S, during=120, log=lambda _: None)
    assert result["exited_during_outage"] is None and result["running_after"], result
    assert result["complete"], result
    assert (result["published"], result["stored"], result["lost"], result["wrong_value"],
            result["unexpected"]) == (240, 240, 0, 0, 0), result
    assert result["exit_code"] == 0
    # Logged while it lasted, but no flood: one line per backoff step, then one a minute.
    assert 1 <= result["retry_lines"] <= 12, result
    [recovered] = result["recovered_lines"]
    assert OUTAGE_S - 3 <= recovered["outage_s"] <= OUTAGE_S + 15, recovered
