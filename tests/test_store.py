"""Both stores, against real SQLite and real PostgreSQL: schema, idempotence, upserts, reads."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from pipeline.records import (
    Anomaly,
    AnomalyKind,
    DeadLetter,
    DeviceInfo,
    DeviceKind,
    DeviceWindow,
    Forecast,
    ForecastScore,
    HomeWindow,
    LateReading,
    Reading,
    Recommendation,
    Source,
)
from sinks.base import Batch, TariffRow
from sinks.migrate import migrations
from sinks.stores import open_store
from tests.conftest import PG_ADMIN_URL

T0 = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)


def _batch() -> Batch:
    readings = [Reading("h1", "mains", T0 + timedelta(seconds=10 * i), 100.0 + i, 5000.0 + i, 230.0, 0.5,
                        DeviceKind.METER, Source.NATIVE) for i in range(12)]
    return Batch(
        readings=readings,
        device_windows=[DeviceWindow("h1", "mains", DeviceKind.METER, T0, 102.5, 100, 105, 1.5, 6),
                        DeviceWindow("h1", "mains", DeviceKind.METER, T0 + timedelta(minutes=1), 108.5, 106, 111, 1.2, 6)],
        home_windows=[HomeWindow("h1", T0, 102.5, 100, 105, 1.5, 6)],
        dead_letters=[DeadLetter(T0, "shems/h1/x/reading", "{bad", "invalid JSON: Expecting value")],
        late_readings=[LateReading(readings[0], T0)],
    )


def test_migrate_twice_is_a_no_op(store):
    version = store.schema_version
    store.migrate()
    assert store.schema_version == version >= 1
    assert all(v == 0 for v in store.counts().values())


def test_round_trip_returns_aware_utc_datetimes(store):
    store.write(_batch())
    got = store.readings()
    assert [r.ts for r in got] == [T0 + timedelta(seconds=10 * i) for i in range(12)]
    assert all(r.ts.utcoffset() == timedelta(0) for r in got)
    assert got[3].energy_wh == 5003.0 and got[3].kind == DeviceKind.METER
    assert store.device_windows()[1].bucket == T0 + timedelta(minutes=1)
    assert store.home_windows()[0].energy_wh == 1.5
    assert store.dead_letters()[0].reason.startswith("invalid JSON")
    assert store.readings(start=T0 + timedelta(seconds=50), end=T0 + timedelta(seconds=70)) == got[5:7]


def test_replaying_a_batch_never_duplicates(store):
    store.write(_batch())
    first = store.counts()
    store.write(_batch())
    assert store.counts() == first
    assert first == {"readings": 12, "device_1m": 2, "home_1m": 1, "devices": 1, "dead_letter": 1,
                     "late_readings": 1, "forecasts": 0, "forecast_scores": 0, "anomalies": 0,
                     "recommendations": 0}


def test_a_re_emitted_window_replaces_the_earlier_one(store):
    store.write(_batch())
    store.write(Batch(home_windows=[HomeWindow("h1", T0, 999.0, 1, 2, 3.0, 7)],
                      device_windows=[DeviceWindow("h1", "mains", DeviceKind.METER, T0, 1.0, 1, 1, 0.1, 9),
                                      DeviceWindow("h1", "mains", DeviceKind.METER, T0, 2.0, 2, 2, 0.2, 9)]))
    assert store.home_windows()[0].mean_power_w == 999.0
    assert store.device_windows()[0].mean_power_w == 2.0  # the last of a batch wins
    assert store.counts()["device_1m"] == 2


def test_devices_only_widen_and_keep_registry_columns(store):
    store.upsert_devices([DeviceInfo("h1", "mains", DeviceKind.METER, Source.SHELLY, vendor_id="shellypro3em-x",
                                     channel=0, timezone="Europe/London")])
    assert store.devices()[0].first_seen is None
    store.write(Batch(readings=[Reading("h1", "mains", T0 + timedelta(hours=1), 1.0, kind=DeviceKind.METER,
                                        source=Source.SHELLY)]))
    store.write(Batch(readings=[Reading("h1", "mains", T0, 1.0, kind=DeviceKind.METER, source=Source.SHELLY),
                                Reading("h1", "mains", T0 + timedelta(minutes=5), 1.0, kind=DeviceKind.METER,
                                        source=Source.SHELLY)]))
    d = store.devices()[0]
    assert (d.first_seen, d.last_seen) == (T0, T0 + timedelta(hours=1))
    assert (d.vendor_id, d.channel, d.timezone) == ("shellypro3em-x", 0, "Europe/London")


def test_hourly_rollups(store):
    store.write(_batch())
    (row,) = store.hourly("home")
    assert row[0] == "h1" and row[1] == T0 and row[-3:] == (6, 1, pytest.approx(102.5 / 60))
    (dev,) = store.hourly("device")
    assert dev[-4:-1] == (pytest.approx(2.7), 12, 2)
    assert dev[3] == pytest.approx((102.5 * 6 + 108.5 * 6) / 12)
    assert dev[-1] == pytest.approx((102.5 + 108.5) / 60)


def test_hourly_rollups_follow_amended_and_imported_minutes(store):
    """Re-emitted minutes and history written later change their hour, and only their hour."""
    store.write(_batch())
    late = T0 + timedelta(hours=3, minutes=5)
    store.write(Batch(device_windows=[DeviceWindow("h1", "mains", DeviceKind.METER, T0, 60.0, 50, 70, 1.0, 3),
                                      DeviceWindow("h1", "mains", DeviceKind.METER, late, 30.0, 30, 30, 0.5, 1)],
                      home_windows=[HomeWindow("h1", late, 30.0, 30, 30, 0.5, 1)]))
    first, second = store.hourly("device")
    assert first[2] == T0 and first[3] == pytest.approx((60.0 * 3 + 108.5 * 6) / 9)
    assert first[-4:] == (pytest.approx(2.2), 9, 2, pytest.approx((60.0 + 108.5) / 60))
    assert second[2] == late.replace(minute=0) and second[-4:] == (pytest.approx(0.5), 1, 1, 0.5)
    assert [r[1] for r in store.hourly("home")] == [T0, late.replace(minute=0)]


def test_sqlite_is_readable_by_another_process_while_written(sqlite_url):
    store = open_store(sqlite_url)
    store.migrate()
    store.write(_batch())
    path = sqlite_url[len("sqlite:///"):]
    store.conn.execute("BEGIN IMMEDIATE")  # a writer holds the write lock mid-transaction
    store.conn.execute("INSERT INTO readings VALUES ('h2','d',1,1,NULL,NULL,NULL)")
    reader = subprocess.run(
        [sys.executable, "-c", f"import sqlite3; c=sqlite3.connect({path!r}, timeout=1); "
         "print(c.execute('select count(*) from readings').fetchone()[0])"],
        capture_output=True, text=True, timeout=30)
    store.conn.execute("COMMIT")
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "12"  # the committed state, without waiting for the writer
    store.close()


def test_every_dead_letter_of_one_message_is_kept_once(store):
    # One Shelly status with two bad meters, or one HTTP batch with two bad readings: two reasons
    # for one message, received once; replaying the batch (a restart) must add nothing.
    payload = '{"em1:0": {"act_power": 1e30}, "em1:1": {"act_power": -1e30}}'
    letters = [DeadLetter.of(T0, "shellies/x/events", payload, f"em1:{n}: power out of range", step="validate",
                             error="out_of_range") for n in (0, 1)]
    letters.append(DeadLetter.of(T0, "shellies/x/events", payload, "em1:0: power out of range", step="windowing",
                                 error="out_of_range"))
    for _ in range(2):
        store.write(Batch(dead_letters=letters))
    kept = store.dead_letters()
    assert sorted((d.step, d.reason) for d in kept) == sorted((d.step, d.reason) for d in letters)
    assert {d.payload_sha256 for d in kept} == {letters[0].payload_sha256}


def test_migration_0017_keeps_the_dead_letters_written_before_it(store_url, monkeypatch):
    import sinks.postgres
    import sinks.sqlite

    def before_0017(dialect: str) -> list:
        return [m for m in migrations(dialect) if m.version < 17]

    for module in (sinks.sqlite, sinks.postgres):
        monkeypatch.setattr(module, "migrations", before_0017)
    store = open_store(store_url)
    store.migrate()
    assert store.schema_version == 16
    mark = "?" if store_url.startswith("sqlite") else "%s"
    old = [(f"topic{n}", f"payload {n}", f"reason {n}", f"{n:064x}") for n in range(3)]
    with store.transaction():
        for topic, payload, reason, digest in old:  # the insert of a 0016 store
            store.conn.execute("INSERT INTO dead_letter (received_at, topic, payload, reason, payload_hash, step, "
                               f"error, payload_bytes) VALUES ({', '.join([mark] * 8)})",
                               (1_000 if mark == "?" else T0, topic, payload, reason, digest, "decode", "e", 9))
    store.close()
    monkeypatch.undo()
    store = open_store(store_url)
    store.migrate()
    assert store.schema_version == max(m.version for m in migrations("sqlite")) >= 17
    kept = store.dead_letters()
    assert [(d.topic, d.payload, d.reason, d.payload_sha256, d.step, d.error, d.payload_bytes) for d in kept] == \
        [(*row, "decode", "e", 9) for row in old]
    again = DeadLetter.of(T0, "topic0", "payload 0", "a reason found after the upgrade")
    store.write(Batch(dead_letters=[again, again]))
    assert [d.reason for d in store.dead_letters()][-1:] == ["a reason found after the upgrade"]
    assert len(store.dead_letters()) == 4
    store.close()


def test_processes_opening_one_new_sqlite_file_at_once_each_migration_runs_once(tmp_path):
    # The demo starts its flow and its viewer together on a store nobody has opened yet.
    script = ("import sys, time; from sinks.stores import open_store\n"
              "start = float(sys.argv[2])\n"
              "time.sleep(max(0.0, start - time.time()))\n"
              "open_store(sys.argv[1]).migrate()\n")
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        start = f"{time.time() + 3:.3f}"  # all of them past their imports, then all at once
        procs = [subprocess.Popen([sys.executable, "-c", script, url, start], stderr=subprocess.PIPE, text=True)
                 for _ in range(5)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 5, errors
        store = open_store(url)
        versions = [v for (v,) in store.conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in migrations("sqlite")]
        store.close()


def test_postgres_recovers_after_its_connection_is_killed(pg_url):
    store = open_store(pg_url)
    store.migrate()
    pid = store.conn.info.backend_pid
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        store.write(_batch())
    store.reconnect()
    store.write(_batch())
    assert store.counts()["readings"] == 12
    store.close()


def test_unsupported_url_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("mysql://root:pw@localhost/x")


def _forecasts(made_at: datetime, shift: float = 0.0) -> list[Forecast]:
    return [Forecast("h1", made_at, made_at + timedelta(hours=i), 60, 60 * (i + 1), 300.0 + i + shift,
                     200.0 + i, 400.0 + i, "linear") for i in range(24)]


def test_forecasts_and_scores_are_upserted_by_key(store):
    store.write(Batch(forecasts=_forecasts(T0)))
    store.write(Batch(forecasts=_forecasts(T0, shift=5.0) + _forecasts(T0 + timedelta(hours=1))))
    got = store.forecasts(home_id="h1", resolution_min=60, made_at=T0)
    assert len(got) == 24 and store.counts()["forecasts"] == 48
    assert got[0] == Forecast("h1", T0, T0, 60, 60, 305.0, 200.0, 400.0, "linear")
    assert got[0].made_at.utcoffset() == timedelta(0)
    score = ForecastScore("h1", 60, 1440, "linear", 10, 120.0, 150.0, 170.0, 0.8, T0)
    store.write(Batch(forecast_scores=[score]))
    store.write(Batch(forecast_scores=[dataclasses.replace(score, n=11)]))
    (stored,) = store.forecast_scores("h1")
    assert stored.n == 11 and stored.updated_at == T0


def test_an_anomaly_opens_once_and_a_replayed_open_never_reopens_it(store):
    opened = Anomaly("h1", "kettle", AnomalyKind.LONG_RUNNING, T0, None, 12.0, "Kettle on for 1 h.")
    closed = Anomaly("h1", "kettle", AnomalyKind.LONG_RUNNING, T0, T0 + timedelta(hours=1), 14.0,
                     "Kettle was on for 1 h.")
    store.write(Batch(anomalies=[opened]))
    assert store.anomalies(open_only=True) == [opened]
    store.write(Batch(anomalies=[closed]))
    store.write(Batch(anomalies=[opened]))  # a replay of the opening after the close
    (row,) = store.anomalies("h1")
    assert row.ended_at == T0 + timedelta(hours=1)
    assert store.anomalies(open_only=True) == []


def test_recommendation_status_survives_a_refresh(store):
    rec = Recommendation("h1", "dishwasher", "load_shift", T0, "Run the dishwasher after 23:00",
                         "3 runs/week x 1.1 kWh x 0.15 GBP/kWh", 14.3, 2.15, "GBP")
    store.write(Batch(recommendations=[rec]))
    assert store.set_recommendation_status("h1", "load_shift", "dishwasher", "dismissed", "alice")
    assert not store.set_recommendation_status("h1", "load_shift", "washer", "accepted", "alice")
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_recommendation_status("h1", "load_shift", "dishwasher", "maybe", "alice")
    later = Recommendation("h1", "dishwasher", "load_shift", T0 + timedelta(days=1), rec.title,
                           rec.detail, 15.0, 2.25, "GBP")
    store.write(Batch(recommendations=[later]))
    (row,) = store.recommendations("h1")
    assert (row.status, row.status_changed_by) == ("dismissed", "alice")
    assert row.recommendation.created_at == T0 and row.updated_at == T0 + timedelta(days=1)
    assert row.recommendation.money_per_month == 2.25


def test_tariff_history_round_trips(store):
    rows = [TariffRow("*", T0, '{"kind": "flat", "import_price": 0.30}'),
            TariffRow("h1", T0 + timedelta(days=30), '{"kind": "flat", "import_price": 0.25}')]
    store.upsert_tariffs(rows)
    store.upsert_tariffs(rows[:1])
    assert store.tariffs() == rows
