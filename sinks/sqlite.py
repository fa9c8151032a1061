"""SQLite store, the embedded default: WAL mode so the viewer and other processes read while the
flow writes. Timestamps are stored as integer microseconds since the epoch (UTC)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sinks.rows as table_rows
from pipeline.config import sqlite_path
from pipeline.records import Anomaly, DeadLetter, DeviceInfo, DeviceWindow, Forecast, ForecastScore, HomeWindow, Reading
from sinks.base import (
    FATAL,
    ROW,
    TABLES,
    TRANSIENT,
    Batch,
    StoredRecommendation,
    StoreError,
    TariffRow,
    check_recommendation_status,
)
from sinks.migrate import migrations
from sinks.rows import dead_letter_row, device_rows, from_us, to_us
from sinks.sql import ANOMALY_UPSERT, COMMAND_ACK_INSERT, DEVICE_UPSERT, RECOMMENDATION_UPSERT


def classify(exc: BaseException) -> str:
    """TRANSIENT, ROW or FATAL (see sinks.base) for an exception raised while writing."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
        return ROW
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc)
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                            "SQLITE_PROTOCOL", "SQLITE_INTERRUPT", "SQLITE_CANTOPEN")) \
                or "database is locked" in text or "closed database" in text:
            return TRANSIENT
        if name.startswith(("SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_CONSTRAINT")) \
                or "Error binding parameter" in text:
            return ROW
        return FATAL  # no such table or column, read-only or corrupt file, ...
    # Python's own errors from adapting one record's values (an int beyond 64 bits, a lone
    # surrogate, a missing attribute) are about that record.
    if isinstance(exc, (ValueError, TypeError, ArithmeticError, AttributeError, LookupError)):
        return ROW
    return FATAL


def _wal_mode(conn: sqlite3.Connection, patience_s: float) -> None:
    """WAL journal mode. Switching a new file to it needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy timeout, while another process has it open
    (the demo's flow and viewer opening one new store together): try again for as long as a
    write would wait."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _dead_letter_row(d: DeadLetter, to_us: Callable[[datetime], int]) -> tuple:
    received_at, *rest = dead_letter_row(d)
    return (to_us(received_at), *rest)


# Rows of one kind per statement, in the order write_rows runs them: the minute windows first,
# so the hourly refresh that follows sees them. ON CONFLICT DO NOTHING, not INSERT OR IGNORE,
# for readings: a replay is ignored (first write wins) but a NULL (NaN) must fail, to be
# isolated and dead-lettered, not silently dropped.
_WINDOW_WRITES: tuple[tuple[str, str, Callable[..., tuple]], ...] = (
    ("readings", "INSERT INTO readings VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
     table_rows.reading_row),
    ("device_windows", "INSERT OR REPLACE INTO device_1m VALUES (?,?,?,?,?,?,?,?,?)",
     table_rows.device_window_row),
    ("home_windows", "INSERT OR REPLACE INTO home_1m VALUES (?,?,?,?,?,?,?)",
     table_rows.home_window_row),
)
_EVENT_WRITES: tuple[tuple[str, str, Callable[..., tuple]], ...] = (
    ("dead_letters", "INSERT INTO dead_letter (received_at, topic, payload, reason, payload_hash, "
     "step, error, payload_bytes, reason_hash) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", _dead_letter_row),
    ("late_readings", "INSERT INTO late_readings VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
     table_rows.late_reading_row),
    ("forecast_scores", "INSERT OR REPLACE INTO forecast_scores VALUES (?,?,?,?,?,?,?,?,?,?)",
     table_rows.forecast_score_row),
    ("anomalies", ANOMALY_UPSERT.replace("%s", "?"), table_rows.anomaly_row),
    ("recommendations", RECOMMENDATION_UPSERT.replace("%s", "?"), table_rows.recommendation_row),
    ("command_acks", COMMAND_ACK_INSERT.replace("%s", "?"), table_rows.command_ack_row),
)

# A forecasting home's share of fleet_forecast: its newest forecast, taken away (sign -1) or
# added (sign 1) through the staging table.
_FLEET_FORECAST_SHARE = """INSERT INTO stage_fleet_forecast
    SELECT f.resolution_min, f.made_at, f.target_ts, {sign} * f.yhat_w, {sign} * f.lower_w,
           {sign} * f.upper_w, {sign}
    FROM touched_forecasts t JOIN forecast_newest n ON n.home_id = t.home_id
      AND n.resolution_min = t.resolution_min
    CROSS JOIN forecasts f ON f.home_id = n.home_id AND f.resolution_min = n.resolution_min
      AND f.made_at = n.made_at"""


class SqliteStore:
    def __init__(self, url: str, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        path = sqlite_path(url)
        if not path:
            raise ValueError("SQLite URL needs a path: sqlite:///relative.db or sqlite:////absolute.db")
        self.path = Path(path)
        # How long a write waits for another process's write lock before the writer counts the
        # store as unavailable (and retries).
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {' '.join(str(exc).split())}") from None

    has_timescale = False

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        _wal_mode(conn, self.busy_timeout_s)
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        return conn

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def transaction(self) -> AbstractContextManager[None]:
        return self._atomic("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))

    def savepoint(self) -> AbstractContextManager[None]:
        return self._atomic("SAVEPOINT part", "RELEASE part", ("ROLLBACK TO part", "RELEASE part"))

    @contextmanager
    def _atomic(self, begin: str, done: str, undo: tuple[str, ...]) -> Iterator[None]:
        c = self.conn
        c.execute(begin)
        try:
            yield
            c.execute(done)
        except BaseException:
            # Some errors (a full disk, an I/O error) end the transaction by themselves.
            if c.in_transaction:
                for statement in undo:
                    c.execute(statement)
            raise

    def after_commit(self, batch: Batch) -> None:
        pass

    def reconnect(self) -> None:
        try:
            self.conn.close()
        finally:
            self.conn = self._connect()

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        try:
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate SQLite store {self.path}: {' '.join(str(exc).split())}") from None

    def _migrate(self) -> None:
        c = self.conn
        # Looked at without the write lock first: a store opened again (every viewer session)
        # then waits for no writer. What is missing is made under the lock: as a statement of its
        # own it would read first and then want to write, and SQLite fails such an upgrade at once
        # ("database is locked") when another process wrote in between, without its busy timeout.
        if not c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone():
            with self.transaction():
                c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                          "name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        done = {v for (v,) in c.execute("SELECT version FROM schema_migrations")}
        for m in migrations("sqlite"):
            if m.version in done:
                continue
            # Asked again under the write lock: another process opening the same new file (the
            # demo's flow and viewer, say) may have applied it since we looked.
            with self.transaction():
                if c.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,)).fetchone():
                    continue
                # executescript would commit on its own; run statement by statement instead.
                for statement in _statements(m.sql):
                    c.execute(statement)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                          (m.version, m.name, to_us(datetime.now(timezone.utc))))

    @property
    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    # ------------------------------------------------------------------ writes
    def write(self, batch: Batch) -> None:
        with self.transaction():
            self.write_rows(batch)

    def write_rows(self, batch: Batch) -> None:
        c = self.conn
        for attr, sql, row in _WINDOW_WRITES:
            if items := getattr(batch, attr):
                c.executemany(sql, [row(x, to_us) for x in items])
        self._refresh_hourly(batch)
        self._refresh_fleet(batch)
        for attr, sql, row in _EVENT_WRITES:
            if items := getattr(batch, attr):
                c.executemany(sql, [row(x, to_us) for x in items])
        if batch.forecasts:
            self._write_forecasts(batch.forecasts)
        self._upsert_devices(device_rows(batch))

    def _refresh_hourly(self, batch: Batch) -> None:
        """Recompute the hours of device_1h/home_1h that this batch's windows fall in, from the
        1-minute tables, inside the write transaction (see migrations/sqlite/0006), and the
        days of home_1d from those hours (0016). CROSS JOIN
        fixes the loop order: the touched hours outside, each a range seek in the 1-minute
        table's key (SQLite's planner otherwise scans the whole 1-minute table per batch)."""
        hour, day = 3_600_000_000, 86_400_000_000
        c = self.conn
        if batch.device_windows:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS touched_device_hours "
                      "(home_id TEXT, device_id TEXT, hour INTEGER, PRIMARY KEY (home_id, device_id, hour))")
            c.executemany("INSERT OR IGNORE INTO touched_device_hours VALUES (?,?,?)",
                          {(w.home_id, w.device_id, to_us(w.bucket) // hour * hour)
                           for w in batch.device_windows})
            c.execute(f"""INSERT OR REPLACE INTO device_1h
                SELECT d.home_id, d.device_id, t.hour, SUM(d.mean_power_w * d.samples) / SUM(d.samples),
                       MIN(d.min_power_w), MAX(d.max_power_w), SUM(d.energy_wh), SUM(d.samples),
                       COUNT(*), SUM(d.mean_power_w) / 60.0
                FROM touched_device_hours t CROSS JOIN device_1m d ON d.home_id = t.home_id
                  AND d.device_id = t.device_id AND d.bucket >= t.hour AND d.bucket < t.hour + {hour}
                GROUP BY d.home_id, d.device_id, t.hour""")
            c.execute("DELETE FROM touched_device_hours")
        if batch.home_windows:
            c.execute("CREATE TEMP TABLE IF NOT EXISTS touched_home_hours "
                      "(home_id TEXT, hour INTEGER, PRIMARY KEY (home_id, hour))")
            c.executemany("INSERT OR IGNORE INTO touched_home_hours VALUES (?,?)",
                          {(w.home_id, to_us(w.bucket) // hour * hour) for w in batch.home_windows})
            c.execute(f"""INSERT OR REPLACE INTO home_1h
                SELECT h.home_id, t.hour, SUM(h.mean_power_w * h.samples) / SUM(h.samples),
                       MIN(h.min_power_w), MAX(h.max_power_w), SUM(h.energy_wh), SUM(h.samples),
                       COUNT(*), SUM(h.mean_power_w) / 60.0
                FROM touched_home_hours t CROSS JOIN home_1m h ON h.home_id = t.home_id
                  AND h.bucket >= t.hour AND h.bucket < t.hour + {hour}
                GROUP BY h.home_id, t.hour""")
            c.execute(f"""INSERT OR REPLACE INTO home_1d
                SELECT t.home_id, t.day, SUM(h.energy_wh)
                FROM (SELECT DISTINCT home_id, hour - hour % {day} AS day FROM touched_home_hours) t
                CROSS JOIN home_1h h ON h.home_id = t.home_id AND h.bucket >= t.day
                  AND h.bucket < t.day + {day}
                GROUP BY t.home_id, t.day""")
            c.execute("DELETE FROM touched_home_hours")

    def _refresh_fleet(self, batch: Batch) -> None:
        """Recompute the minutes of fleet_1m that this batch's home windows fall in (see
        migrations/sqlite/0016): each a range of home_1m's covering bucket index. Exact, and safe
        with several writers: SQLite runs one write transaction at a time."""
        if not batch.home_windows:
            return
        c = self.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS touched_minutes (bucket INTEGER PRIMARY KEY)")
        c.executemany("INSERT OR IGNORE INTO touched_minutes VALUES (?)",
                      {(to_us(w.bucket),) for w in batch.home_windows})
        c.execute("INSERT OR REPLACE INTO fleet_1m SELECT t.bucket, SUM(h.mean_power_w), COUNT(*) "
                  "FROM touched_minutes t CROSS JOIN home_1m h ON h.bucket = t.bucket GROUP BY t.bucket")
        c.execute("DELETE FROM touched_minutes")

    def _write_forecasts(self, forecasts: Sequence[Forecast]) -> None:
        """Write the forecasts and move their homes' shares of fleet_forecast (migrations/sqlite/0016)
        from each home's newest forecast before them to its newest after them."""
        c = self.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS touched_forecasts (home_id TEXT, "
                  "resolution_min INTEGER, PRIMARY KEY (home_id, resolution_min))")
        c.execute("CREATE TEMP TABLE IF NOT EXISTS stage_fleet_forecast (resolution_min INTEGER, "
                  "made_at INTEGER, target_ts INTEGER, yhat_w REAL, lower_w REAL, upper_w REAL, "
                  "homes INTEGER)")
        c.executemany("INSERT OR IGNORE INTO touched_forecasts VALUES (?,?)",
                      {(f.home_id, f.resolution_min) for f in forecasts})
        c.execute(_FLEET_FORECAST_SHARE.format(sign=-1))
        c.executemany("INSERT OR REPLACE INTO forecasts VALUES (?,?,?,?,?,?,?,?,?)",
                      [table_rows.forecast_row(f, to_us) for f in forecasts])
        newest: dict[tuple[str, int], int] = {}
        for f in forecasts:
            key = (f.home_id, f.resolution_min)
            newest[key] = max(newest.get(key, to_us(f.made_at)), to_us(f.made_at))
        c.executemany("INSERT INTO forecast_newest VALUES (?,?,?) ON CONFLICT (home_id, resolution_min) "
                      "DO UPDATE SET made_at = max(made_at, excluded.made_at)",
                      [(h, r, m) for (h, r), m in newest.items()])
        c.execute(_FLEET_FORECAST_SHARE.format(sign=1))
        c.execute("""INSERT INTO fleet_forecast
            SELECT resolution_min, made_at, target_ts, SUM(yhat_w), SUM(lower_w), SUM(upper_w),
                   SUM(homes)
            FROM stage_fleet_forecast WHERE true GROUP BY resolution_min, made_at, target_ts
            ON CONFLICT (resolution_min, made_at, target_ts) DO UPDATE SET
              yhat_w = yhat_w + excluded.yhat_w, lower_w = lower_w + excluded.lower_w,
              upper_w = upper_w + excluded.upper_w, homes = homes + excluded.homes""")
        c.execute("DELETE FROM stage_fleet_forecast")
        c.execute("DELETE FROM touched_forecasts")

    def _upsert_devices(self, devices: Iterable[DeviceInfo]) -> None:
        self.conn.executemany(
            DEVICE_UPSERT.replace("%s", "?"),
            [(d.home_id, d.device_id, d.kind.value, d.source.value,
              to_us(d.first_seen) if d.first_seen else None,
              to_us(d.last_seen) if d.last_seen else None, d.vendor_id, d.channel, d.timezone)
             for d in devices],
        )

    def upsert_devices(self, devices: Sequence[DeviceInfo]) -> None:
        with self.transaction():
            self._upsert_devices(devices)

    # ------------------------------------------------------------------ reads
    def counts(self) -> dict[str, int]:
        return {t: self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    def readings(self, home_id: str | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> list[Reading]:
        return [table_rows.reading_from_row(row, from_us) for row in self._readings(home_id, start, end)]

    def _readings(self, home_id: str | None = None, start: datetime | None = None,
                  end: datetime | None = None) -> sqlite3.Cursor:
        sql = "SELECT r.*, d.kind, d.source FROM readings r LEFT JOIN devices d USING (home_id, device_id) WHERE 1=1"
        args: list[str | int] = []
        if home_id is not None:
            sql += " AND r.home_id = ?"
            args.append(home_id)
        if start is not None:
            sql += " AND r.ts >= ?"
            args.append(to_us(start))
        if end is not None:
            sql += " AND r.ts < ?"
            args.append(to_us(end))
        sql += " ORDER BY r.home_id, r.device_id, r.ts"
        return self.conn.execute(sql, args)

    def _of_home(self, select: str, home_id: str | None, order: str) -> sqlite3.Cursor:
        """``select`` (SELECT ... FROM a table with a home_id), only ``home_id``'s rows when given."""
        where, args = ("WHERE home_id = ?", [home_id]) if home_id else ("", [])
        return self.conn.execute(f"{select} {where} ORDER BY {order}", args)

    def device_windows(self, home_id: str | None = None) -> list[DeviceWindow]:
        return [table_rows.device_window_from_row(row, from_us) for row in self._device_windows(home_id)]

    def _device_windows(self, home_id: str | None = None) -> sqlite3.Cursor:
        return self._of_home("SELECT home_id, device_id, kind, bucket, mean_power_w, min_power_w, max_power_w, "
                             "energy_wh, samples FROM device_1m", home_id, "home_id, device_id, bucket")

    def home_windows(self, home_id: str | None = None) -> list[HomeWindow]:
        return [table_rows.home_window_from_row(row, from_us) for row in self._home_windows(home_id)]

    def _home_windows(self, home_id: str | None = None) -> sqlite3.Cursor:
        return self._of_home("SELECT home_id, bucket, mean_power_w, min_power_w, max_power_w, energy_wh, "
                             "samples FROM home_1m", home_id, "home_id, bucket")

    def export_batches(self, table: str, rows: int = 50_000) -> Iterator[list]:
        cursor, convert = {
            "readings": (self._readings, table_rows.reading_from_row),
            "device_1m": (self._device_windows, table_rows.device_window_from_row),
            "home_1m": (self._home_windows, table_rows.home_window_from_row),
            "devices": (self._devices, table_rows.device_info_from_row),
        }[table]
        rows_read = cursor()
        while chunk := rows_read.fetchmany(rows):
            yield [convert(row, from_us) for row in chunk]

    def hourly(self, level: str, home_id: str | None = None) -> list[tuple]:
        """Rows of device_1h or home_1h (level 'device' or 'home'), bucket as aware datetime:
        keys, mean/min/max power, energy_wh, samples, minutes, power_wh."""
        view = {"device": "device_1h", "home": "home_1h"}[level]
        keys = "home_id, device_id, bucket" if level == "device" else "home_id, bucket"
        cols = keys + ", mean_power_w, min_power_w, max_power_w, energy_wh, samples, minutes, power_wh"
        rows = self._of_home(f"SELECT {cols} FROM {view}", home_id, keys).fetchall()
        pos = 2 if level == "device" else 1
        return [tuple(from_us(v) if i == pos else v for i, v in enumerate(row)) for row in rows]

    def home_last_seen(self) -> dict[str, datetime | None]:
        rows = self.conn.execute("SELECT home_id, max(last_seen) FROM devices GROUP BY home_id")
        return {h: from_us(t) for h, t in rows}

    def dead_letters(self) -> list[DeadLetter]:
        rows = self.conn.execute(
            "SELECT received_at, topic, payload, reason, step, error, payload_bytes, payload_hash "
            "FROM dead_letter ORDER BY received_at, id")
        return [table_rows.dead_letter_from_row(row, from_us) for row in rows]

    def devices(self) -> list[DeviceInfo]:
        return [table_rows.device_info_from_row(row, from_us) for row in self._devices()]

    def _devices(self) -> sqlite3.Cursor:
        return self.conn.execute(
            "SELECT home_id, device_id, kind, source, first_seen, last_seen, vendor_id, channel, timezone "
            "FROM devices ORDER BY home_id, device_id")

    def forecasts(self, home_id: str | None = None, resolution_min: int | None = None,
                  made_at: datetime | None = None) -> list[Forecast]:
        sql, args = "SELECT * FROM forecasts WHERE 1=1", []
        for column, value in (("home_id", home_id), ("resolution_min", resolution_min),
                              ("made_at", to_us(made_at) if made_at else None)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        rows = self.conn.execute(sql + " ORDER BY home_id, resolution_min, made_at, target_ts", args)
        return [table_rows.forecast_from_row(row, from_us) for row in rows]

    def forecast_scores(self, home_id: str | None = None) -> list[ForecastScore]:
        rows = self._of_home("SELECT * FROM forecast_scores", home_id, "home_id, resolution_min, horizon_min")
        return [table_rows.forecast_score_from_row(row, from_us) for row in rows]

    def anomalies(self, home_id: str | None = None, open_only: bool = False) -> list[Anomaly]:
        sql, args = "SELECT * FROM anomalies WHERE 1=1", []
        if home_id is not None:
            sql += " AND home_id = ?"
            args.append(home_id)
        if open_only:
            sql += " AND ended_at IS NULL"
        rows = self.conn.execute(sql + " ORDER BY home_id, started_at, device_id, kind", args)
        return [table_rows.anomaly_from_row(row, from_us) for row in rows]

    def recommendations(self, home_id: str | None = None) -> list[StoredRecommendation]:
        rows = self._of_home("SELECT * FROM recommendations", home_id, "home_id, kind, device_id")
        return [table_rows.recommendation_from_row(row, from_us) for row in rows]

    def set_recommendation_status(self, home_id: str, kind: str, device_id: str, status: str,
                                  by: str) -> bool:
        check_recommendation_status(status)
        cur = self.conn.execute(
            "UPDATE recommendations SET status = ?, status_changed_at = ?, status_changed_by = ? "
            "WHERE home_id = ? AND kind = ? AND device_id = ?",
            (status, to_us(datetime.now(timezone.utc)), by, home_id, kind, device_id))
        return cur.rowcount == 1

    def tariffs(self) -> list[TariffRow]:
        rows = self.conn.execute("SELECT * FROM tariffs ORDER BY home_id, effective_from")
        return [table_rows.tariff_from_row(row, from_us) for row in rows]

    def upsert_tariffs(self, rows: Sequence[TariffRow]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO tariffs VALUES (?,?,?)",
                                  [(r.home_id, to_us(r.effective_from), r.spec_json) for r in rows])

    def close(self) -> None:
        self.conn.close()


def _statements(sql: str) -> list[str]:
    """Split a migration file on ';' at line ends (our migrations contain no ';' in strings)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().strip(";")]
