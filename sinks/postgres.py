"""PostgreSQL store, with TimescaleDB when the extension is available.

Writes COPY each batch (binary) into session-local staging tables, then move it with one
``INSERT ... SELECT ... ON CONFLICT`` per table, all in one transaction: COPY's speed with
upsert semantics, so a replay never duplicates a row.

Every connection has timeouts, so a server that is gone or hangs becomes an error the writer
retries instead of a process blocked for ever. Defaults, each replaced by the same libpq
parameter in the URL's query (e.g. ``postgresql://host/shems?connect_timeout=5``):

- ``connect_timeout=10`` (seconds; libpq's ``PGCONNECT_TIMEOUT`` is honoured too)
- ``keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3``: a dead peer or
  a silent network drop is noticed within about a minute
- ``tcp_user_timeout=60000`` (ms): data the server has not acknowledged for a minute fails
- ``statement_timeout`` 60 s, set on each session unless the server options already set it:
  ``?options=-c%20statement_timeout%3D120s`` in the URL, or ``PGOPTIONS``. Migrations and
  TimescaleDB refreshes run without it.

Only standard libpq parameters, so the same URL works for psql, the viewer's pool and the bench.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

import sinks.rows as table_rows
from pipeline.records import Anomaly, DeadLetter, DeviceInfo, DeviceWindow, Forecast, ForecastScore, HomeWindow, Reading
from sinks.base import (
    FATAL,
    ROW,
    TABLES,
    TRANSIENT,
    Batch,
    StoredRecommendation,
    StoreError,
    StoreUnavailable,
    TariffRow,
    check_recommendation_status,
    mask_url,
    one_line,
)
from sinks.migrate import migrations
from sinks.rows import dead_letter_row, device_rows
from sinks.sql import ANOMALY_UPSERT, COMMAND_ACK_INSERT, DEVICE_UPSERT, RECOMMENDATION_UPSERT

CONNECTION_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                       "keepalives_interval": "10", "keepalives_count": "3", "tcp_user_timeout": "60000"}
STATEMENT_TIMEOUT_DEFAULT = "60s"
# How long opening the store at start-up keeps trying a server that does not answer yet (one
# that is starting up, say) before it gives up with StoreUnavailable.
STARTUP_TIMEOUT_S = 20.0

# SQLSTATE classes (the first two characters) by how the writer handles them.
_TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}  # connection, rollback, resources, shutdown, I/O
_TRANSIENT_STATES = {"55P03", "55006", "25006"}  # lock not available, object in use, read-only
_ROW_CLASSES = {"22", "23", "54"}  # data exception, integrity constraint, program limit exceeded
# A refused connection carries no SQLSTATE, only libpq's message: these mean "not now" is not
# the problem (anything else, e.g. "Connection refused" or "starting up", is waited out).
_FATAL_CONNECT_MESSAGES = ("does not exist", "authentication failed", "no pg_hba.conf entry",
                           "password", "permission denied", "certificate", "invalid sslmode",
                           "SSL is not enabled")


def _no_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a device can send one."""
    return text.replace("\x00", "\ufffd")


def _int4(value: int) -> int:
    """Checked here: psycopg's binary int4 dumper wraps a larger int silently (2**31 is stored as
    -2147483648) where PostgreSQL would refuse it."""
    if not -2**31 <= value < 2**31:
        raise OverflowError(f"integer out of range: {value}")
    return value


def connection_settings(url: str) -> tuple[str, str | None]:
    """The libpq connection string (timeouts and keepalives defaulted) and the statement timeout
    to set on each session (None when the URL's ``options`` or ``PGOPTIONS`` set one)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"invalid PostgreSQL URL {mask_url(url)}: {one_line(exc)}") from None
    extra = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    if "PGCONNECT_TIMEOUT" in os.environ:
        extra.pop("connect_timeout", None)
    server_options = f"{given.get('options', '')} {os.environ.get('PGOPTIONS', '')}"
    statement_timeout = None if "statement_timeout" in server_options else STATEMENT_TIMEOUT_DEFAULT
    return make_conninfo(url, **extra), statement_timeout


def classify(exc: BaseException) -> str:
    """TRANSIENT, ROW or FATAL (see sinks.base) for an exception raised while writing."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # Raised by the client: a connection that failed, broke or was closed, or a value
            # it could not send (psycopg.DataError from a dumper).
            if isinstance(exc, psycopg.DataError):
                return ROW
            if isinstance(exc, psycopg.OperationalError):
                text = str(exc)
                return FATAL if any(m in text for m in _FATAL_CONNECT_MESSAGES) else TRANSIENT
            if isinstance(exc, psycopg.InterfaceError):
                return TRANSIENT
            return FATAL
        if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
            return TRANSIENT
        if state[:2] in _ROW_CLASSES:
            return ROW
        return FATAL
    # Python's own errors from adapting one record's values (an int too large for int4, a lone
    # surrogate, a missing attribute) are about that record.
    if isinstance(exc, (ValueError, TypeError, ArithmeticError, AttributeError, LookupError)):
        return ROW
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return TRANSIENT
    return FATAL

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_readings (LIKE readings) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_device_1m (LIKE device_1m) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_home_1m (LIKE home_1m) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_forecasts (LIKE forecasts) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_fleet_1m (LIKE fleet_1m) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_home_1d (LIKE home_1d) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_fleet_forecast (LIKE fleet_forecast) ON COMMIT DELETE ROWS;
DELETE FROM stage_readings; DELETE FROM stage_device_1m; DELETE FROM stage_home_1m;
DELETE FROM stage_forecasts; DELETE FROM stage_fleet_1m; DELETE FROM stage_fleet_forecast;
DELETE FROM stage_home_1d;
"""  # emptied first: isolating a bad row writes several parts of a batch in one transaction

_READING_TYPES = ["text", "text", "timestamptz", "float8", "float8", "float8", "float8"]
_DEVICE_1M_TYPES = ["text", "text", "timestamptz", "text", "float8", "float8", "float8", "float8", "int4"]
_HOME_1M_TYPES = ["text", "timestamptz", "float8", "float8", "float8", "float8", "int4"]
_FORECAST_TYPES = ["text", "int4", "timestamptz", "timestamptz", "int4", "float8", "float8", "float8", "text"]
_WINDOW_VALUES = ("mean_power_w", "min_power_w", "max_power_w", "energy_wh", "samples")

def _one_row(cur: psycopg.Cursor) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, EXISTS)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("a one-row query returned no row")
    return row




_HOURLY_COLUMNS = """sum(m.mean_power_w * m.samples) / sum(m.samples), min(m.min_power_w),
       max(m.max_power_w), sum(m.energy_wh), sum(m.samples), count(*), sum(m.mean_power_w) / 60.0"""
_HOURLY_UPDATE = """mean_power_w = excluded.mean_power_w, min_power_w = excluded.min_power_w,
  max_power_w = excluded.max_power_w, energy_wh = excluded.energy_wh, samples = excluded.samples,
  minutes = excluded.minutes, power_wh = excluded.power_wh"""
_REFRESH_DEVICE_1H = f"""
INSERT INTO device_1h
SELECT m.home_id, m.device_id, t.hour, {_HOURLY_COLUMNS}
FROM (SELECT DISTINCT home_id, device_id, date_trunc('hour', bucket) AS hour FROM stage_device_1m) t
JOIN device_1m m ON m.home_id = t.home_id AND m.device_id = t.device_id
  AND m.bucket >= t.hour AND m.bucket < t.hour + INTERVAL '1 hour'
GROUP BY m.home_id, m.device_id, t.hour
ON CONFLICT (home_id, device_id, bucket) DO UPDATE SET {_HOURLY_UPDATE}"""
_REFRESH_HOME_1H = f"""
INSERT INTO home_1h
SELECT m.home_id, t.hour, {_HOURLY_COLUMNS}
FROM (SELECT DISTINCT home_id, date_trunc('hour', bucket) AS hour FROM stage_home_1m) t
JOIN home_1m m ON m.home_id = t.home_id AND m.bucket >= t.hour AND m.bucket < t.hour + INTERVAL '1 hour'
GROUP BY m.home_id, t.hour
ON CONFLICT (home_id, bucket) DO UPDATE SET {_HOURLY_UPDATE}"""


# fleet_1m and home_1d (migrations/postgres/0016): what this batch changes in each of its minutes
# and each home's day, read before home_1m is written (the rows it replaces), then added to the
# stored sums. An addition, not a recount: several flow processes write the same minute at once,
# and a recount would see only the homes committed before it (the last to commit would lose the
# others); and under TimescaleDB home_1h is a continuous aggregate, and a day of minutes per home
# and batch is too much to read. A home is written by one process only, so the rows a batch
# replaces are its own; a replay changes nothing. One join for both, bounded to the batch's
# minutes so TimescaleDB reads only their chunks.
_HOME_1M_CHANGE = """
WITH d AS (
  SELECT s.home_id, s.bucket, s.mean_power_w - coalesce(m.mean_power_w, 0) AS power_w,
         s.energy_wh - coalesce(m.energy_wh, 0) AS energy_wh, (m.home_id IS NULL)::int AS new
  FROM stage_home_1m s LEFT JOIN home_1m m ON m.home_id = s.home_id AND m.bucket = s.bucket
    AND m.bucket >= (SELECT min(bucket) FROM stage_home_1m)
    AND m.bucket <= (SELECT max(bucket) FROM stage_home_1m)),
f AS (INSERT INTO stage_fleet_1m SELECT bucket, sum(power_w), sum(new) FROM d GROUP BY bucket)
INSERT INTO stage_home_1d
SELECT home_id, date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', sum(energy_wh)
FROM d GROUP BY 1, 2"""
_FLEET_1M_ADD = """
INSERT INTO fleet_1m SELECT * FROM stage_fleet_1m ORDER BY bucket
ON CONFLICT (bucket) DO UPDATE SET power_w = fleet_1m.power_w + excluded.power_w,
  homes = fleet_1m.homes + excluded.homes"""
_HOME_1D_ADD = """
INSERT INTO home_1d SELECT * FROM stage_home_1d ORDER BY 1, 2
ON CONFLICT (home_id, day) DO UPDATE SET energy_wh = home_1d.energy_wh + excluded.energy_wh"""

# fleet_forecast (migrations/postgres/0016): the forecasting homes' shares move from their old
# newest forecasts (taken away before the batch's are written) to their new newest (added
# after), through the staging table, then added to the stored sums.
_FLEET_FORECAST_SHARE = """
INSERT INTO stage_fleet_forecast
SELECT f.resolution_min, f.made_at, f.target_ts, {sign} * f.yhat_w, {sign} * f.lower_w,
       {sign} * f.upper_w, {sign}
FROM (SELECT DISTINCT home_id, resolution_min FROM stage_forecasts) t
JOIN forecast_newest n ON n.home_id = t.home_id AND n.resolution_min = t.resolution_min
JOIN forecasts f ON f.home_id = n.home_id AND f.resolution_min = n.resolution_min
  AND f.made_at = n.made_at"""
_FORECAST_NEWEST = """
INSERT INTO forecast_newest
SELECT home_id, resolution_min, max(made_at) FROM stage_forecasts GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (home_id, resolution_min) DO UPDATE SET
  made_at = greatest(forecast_newest.made_at, excluded.made_at)"""
_FLEET_FORECAST_ADD = """
INSERT INTO fleet_forecast
SELECT resolution_min, made_at, target_ts, sum(yhat_w), sum(lower_w), sum(upper_w), sum(homes)
FROM stage_fleet_forecast GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (resolution_min, made_at, target_ts) DO UPDATE SET
  yhat_w = fleet_forecast.yhat_w + excluded.yhat_w, lower_w = fleet_forecast.lower_w + excluded.lower_w,
  upper_w = fleet_forecast.upper_w + excluded.upper_w, homes = fleet_forecast.homes + excluded.homes"""


def _last_by_key(items, key) -> list:
    """Keep the last of each key: one upsert may not touch a row twice."""
    return list({key(x): x for x in items}.values())


# Rows of one kind per statement, written as they come (no staging copy needed: these kinds are
# few per batch, and their conflicts are resolved by the statement itself).
_EVENT_WRITES: tuple[tuple[str, str, Callable[[Any], tuple]], ...] = (
    ("dead_letters", "INSERT INTO dead_letter (received_at, topic, payload, reason, payload_hash, "
     "step, error, payload_bytes, reason_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
     "ON CONFLICT DO NOTHING",
     lambda d: dead_letter_row(d, _no_nul)),
    ("late_readings", "INSERT INTO late_readings VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
     table_rows.late_reading_row),
    ("anomalies", ANOMALY_UPSERT, table_rows.anomaly_row),
    ("recommendations", RECOMMENDATION_UPSERT, table_rows.recommendation_row),
    ("command_acks", COMMAND_ACK_INSERT, table_rows.command_ack_row),
)


# The reads that both a caller's list and `shems export`'s batches come from.
_READINGS = ("SELECT r.home_id, r.device_id, r.ts, r.power_w, r.energy_wh, r.voltage_v, r.current_a, "
             "d.kind, d.source FROM readings r LEFT JOIN devices d USING (home_id, device_id) "
             "WHERE (%(home)s::text IS NULL OR r.home_id = %(home)s) "
             "AND (%(start)s::timestamptz IS NULL OR r.ts >= %(start)s) "
             "AND (%(end)s::timestamptz IS NULL OR r.ts < %(end)s) "
             "ORDER BY r.home_id, r.device_id, r.ts")
_DEVICE_1M = ("SELECT home_id, device_id, kind, bucket, mean_power_w, min_power_w, max_power_w, "
              "energy_wh, samples FROM device_1m WHERE (%(h)s::text IS NULL OR home_id = %(h)s) "
              "ORDER BY home_id, device_id, bucket")
_HOME_1M = ("SELECT home_id, bucket, mean_power_w, min_power_w, max_power_w, energy_wh, samples "
            "FROM home_1m WHERE (%(h)s::text IS NULL OR home_id = %(h)s) ORDER BY home_id, bucket")
_DEVICES = ("SELECT home_id, device_id, kind, source, first_seen, last_seen, vendor_id, channel, timezone "
            "FROM devices ORDER BY home_id, device_id")


class PostgresStore:
    def __init__(self, url: str, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.url = url
        self.conninfo, self.statement_timeout = connection_settings(url)
        self.conn = self._connect_at_startup(startup_timeout_s)
        self.has_timescale = self._timescale_available()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            self._set_statement_timeout(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_statement_timeout(self, conn: psycopg.Connection) -> None:
        if self.statement_timeout is None:
            conn.execute("RESET statement_timeout")  # back to the URL's options
        else:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (self.statement_timeout,))

    def _connect_at_startup(self, timeout_s: float) -> psycopg.Connection:
        deadline = time.monotonic() + timeout_s
        delay = 0.5
        while True:
            try:
                return self._connect()
            except psycopg.Error as exc:
                kind = classify(exc)
                if kind != TRANSIENT:
                    raise StoreError(f"cannot use PostgreSQL at {mask_url(self.url)}: {one_line(exc)}") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreUnavailable(f"PostgreSQL at {mask_url(self.url)} unreachable for "
                                           f"{timeout_s:.0f} s: {one_line(exc)}") from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    def reconnect(self) -> None:
        try:
            self.conn.close()
        finally:
            self.conn = self._connect()

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    def transaction(self):
        return self.conn.transaction()

    def savepoint(self):
        # psycopg turns a transaction block nested in another into a savepoint.
        return self.conn.transaction()

    def _timescale_available(self) -> bool:
        """Installed in this database, or installable: its files present AND the library preloaded
        (several clusters of one PostgreSQL version share the files; only a cluster that preloads
        the library can create the extension)."""
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'), "
            "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') "
            # pg_settings, not current_setting(): a role without pg_read_all_settings may not read
            # this setting, and must get "no TimescaleDB" rather than an error.
            "AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'shared_preload_libraries' "
            "AND setting ~ 'timescaledb')")
        available = _one_row(row)
        return available[0] or available[1]

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        try:
            self._migrate()
        except psycopg.Error as exc:
            if classify(exc) == TRANSIENT:
                raise StoreUnavailable(f"PostgreSQL at {mask_url(self.url)} failed while migrating: "
                                       f"{one_line(exc)}") from None
            raise StoreError(f"cannot migrate PostgreSQL at {mask_url(self.url)}: {one_line(exc)}") from None

    def _migrate(self) -> None:
        c = self.conn
        # Two processes starting at once must not both run a migration.
        with c.transaction():
            # Creating hypertables over existing data may take longer than one write.
            c.execute("SET LOCAL statement_timeout = 0")
            c.execute("SELECT pg_advisory_xact_lock(hashtext('shems_migrations'))")
            c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                      "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {v for (v,) in c.execute("SELECT version FROM schema_migrations")}
            variant = "timescale" if self.has_timescale else "postgres_plain"
            todo = sorted(migrations("postgres") + migrations(variant), key=lambda m: m.version)
            for m in todo:
                if m.version in done:
                    continue
                c.execute(m.sql)
                c.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                          (m.version, f"{variant}/{m.name}" if m.version > 1 else m.name))

    @property
    def schema_version(self) -> int:
        return _one_row(self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))[0]

    # ------------------------------------------------------------------ writes
    def write(self, batch: Batch) -> None:
        with self.transaction():
            self.write_rows(batch)
        self.after_commit(batch)

    def write_rows(self, batch: Batch) -> None:
        c = self.conn
        with c.cursor() as cur:
            cur.execute(_STAGING)
            if batch.readings:
                self._copy(cur, "stage_readings", _READING_TYPES,
                           (table_rows.reading_row(r) for r in batch.readings))
                cur.execute("INSERT INTO readings SELECT * FROM stage_readings ON CONFLICT DO NOTHING")
            if batch.device_windows:
                self._merge(cur, "device_1m", _DEVICE_1M_TYPES, table_rows.device_window_row,
                            batch.device_windows, key=("home_id", "device_id", "bucket"),
                            update=("kind", *_WINDOW_VALUES))
            if batch.home_windows:
                # The rollups take the change each minute makes (before the upsert) and add it after.
                self._merge(cur, "home_1m", _HOME_1M_TYPES, table_rows.home_window_row, batch.home_windows,
                            key=("home_id", "bucket"), update=_WINDOW_VALUES,
                            before=(_HOME_1M_CHANGE,), after=(_HOME_1D_ADD,))
            if not self.has_timescale:
                self._refresh_hourly(cur, batch)
            for attr, sql, row in _EVENT_WRITES:
                if items := getattr(batch, attr):
                    cur.executemany(sql, [row(x) for x in items])
            if batch.forecasts:
                self._merge(cur, "forecasts", _FORECAST_TYPES, table_rows.forecast_row, batch.forecasts,
                            key=("home_id", "resolution_min", "made_at", "target_ts"),
                            update=("horizon_min", "yhat_w", "lower_w", "upper_w", "model"),
                            before=(_FLEET_FORECAST_SHARE.format(sign=-1),),
                            after=(_FORECAST_NEWEST, _FLEET_FORECAST_SHARE.format(sign=1)))
            if batch.forecast_scores:
                scores = _last_by_key(batch.forecast_scores,
                                      lambda x: (x.home_id, x.resolution_min, x.horizon_min))
                cur.executemany(
                    "INSERT INTO forecast_scores VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (home_id, resolution_min, horizon_min) DO UPDATE SET "
                    "model = excluded.model, n = excluded.n, mae_w = excluded.mae_w, "
                    "naive_day_mae_w = excluded.naive_day_mae_w, "
                    "naive_week_mae_w = excluded.naive_week_mae_w, coverage = excluded.coverage, "
                    "updated_at = excluded.updated_at",
                    [table_rows.forecast_score_row(x) for x in scores])
            self._upsert_devices(cur, device_rows(batch))
            # Last, in key order: the fleet's rows stay locked from here to the commit, and
            # every writer of the same minutes or forecasts waits for them.
            if batch.home_windows:
                cur.execute(_FLEET_1M_ADD)
            if batch.forecasts:
                cur.execute(_FLEET_FORECAST_ADD)

    def after_commit(self, batch: Batch) -> None:
        if self.has_timescale:
            self._refresh_rollups(batch)

    @staticmethod
    def _refresh_hourly(cur: psycopg.Cursor, batch: Batch) -> None:
        """Without TimescaleDB: recompute the hours of device_1h/home_1h that this batch's windows
        fall in, from the 1-minute tables, inside the write transaction (the staging tables still
        hold the batch's windows; see migrations/postgres_plain/0006)."""
        if batch.device_windows:
            cur.execute(_REFRESH_DEVICE_1H)
        if batch.home_windows:
            cur.execute(_REFRESH_HOME_1H)

    def _refresh_rollups(self, batch: Batch) -> None:
        """Re-materialise the hourly continuous aggregates over old buckets this batch touched.

        Real-time aggregation only covers what is newer than the last materialisation; the refresh
        policy keeps the recent past materialised, but an import or a late amendment of an older
        hour would stay invisible (or stale) until a refresh that may never come. So refresh
        those hours now, outside the write transaction as TimescaleDB requires.
        """
        buckets = [w.bucket for w in batch.device_windows] + [w.bucket for w in batch.home_windows]
        if not buckets:
            return
        horizon = datetime.now(timezone.utc) - timedelta(hours=1)
        old = [b for b in buckets if b < horizon]
        if not old:
            return
        start = min(old).replace(minute=0, second=0, microsecond=0)
        end = max(old).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        # An import's batch may span a year of hours: the refresh may take longer than a write
        # may, and timing it out would only make the writer redo it for ever.
        self.conn.execute("SET statement_timeout = 0")
        try:
            for view in ("device_1h", "home_1h"):
                # A policy job refreshing the same window holds its lock briefly: wait and retry.
                for attempt in Retrying(retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
                                        wait=wait_exponential(multiplier=0.2, max=5),
                                        stop=stop_after_attempt(10), reraise=True):
                    with attempt:
                        self.conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
        finally:
            self._set_statement_timeout(self.conn)

    @classmethod
    def _merge(cls, cur: psycopg.Cursor, table: str, types: list[str], row: Callable[..., tuple],
               items: Iterable[Any], key: tuple[str, ...], update: tuple[str, ...],
               before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> None:
        """COPY ``items`` into stage_<table>, then upsert them into ``table`` on ``key`` (the
        records' attributes of the same names): a re-emitted row replaces the ``update`` columns.
        ``before`` and ``after`` run around the upsert, with the stage filled (rollups)."""
        last = _last_by_key(items, attrgetter(*key))
        cls._copy(cur, f"stage_{table}", types, (row(x, count=_int4) for x in last))
        for sql in before:
            cur.execute(sql)
        cur.execute(f"INSERT INTO {table} SELECT * FROM stage_{table} ON CONFLICT ({', '.join(key)}) "
                    f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in update)}")
        for sql in after:
            cur.execute(sql)

    @staticmethod
    def _copy(cur: psycopg.Cursor, table: str, types: list[str], rows: Iterable[tuple]) -> None:
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    @staticmethod
    def _upsert_devices(cur: psycopg.Cursor, devices: Iterable[DeviceInfo]) -> None:
        rows = [(d.home_id, d.device_id, d.kind.value, d.source.value, d.first_seen, d.last_seen,
                 d.vendor_id, d.channel, d.timezone) for d in devices]
        if rows:
            # Sorted so concurrent writers lock device rows in the same order (no deadlocks).
            ordered = sorted(rows, key=lambda r: (r[0], r[1]))
            cur.executemany(DEVICE_UPSERT, ordered)

    def upsert_devices(self, devices: Sequence[DeviceInfo]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._upsert_devices(cur, devices)

    # ------------------------------------------------------------------ reads
    def counts(self) -> dict[str, int]:
        return {t: _one_row(self.conn.execute(f"SELECT count(*) FROM {t}"))[0] for t in TABLES}

    def readings(self, home_id: str | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> list[Reading]:
        rows = self.conn.execute(_READINGS, {"home": home_id, "start": start, "end": end})
        return [table_rows.reading_from_row(row) for row in rows]

    def device_windows(self, home_id: str | None = None) -> list[DeviceWindow]:
        return [table_rows.device_window_from_row(row) for row in self.conn.execute(_DEVICE_1M, {"h": home_id})]

    def home_windows(self, home_id: str | None = None) -> list[HomeWindow]:
        return [table_rows.home_window_from_row(row) for row in self.conn.execute(_HOME_1M, {"h": home_id})]

    def export_batches(self, table: str, rows: int = 50_000) -> Iterator[list]:
        sql, params, convert = {
            "readings": (_READINGS, {"home": None, "start": None, "end": None}, table_rows.reading_from_row),
            "device_1m": (_DEVICE_1M, {"h": None}, table_rows.device_window_from_row),
            "home_1m": (_HOME_1M, {"h": None}, table_rows.home_window_from_row),
            "devices": (_DEVICES, None, table_rows.device_info_from_row),
        }[table]
        # A server-side cursor: the table comes over in batches, never whole into this process.
        with self.conn.transaction(), self.conn.cursor(name=f"shems_export_{table}") as cur:
            cur.execute(sql, params)
            while chunk := cur.fetchmany(rows):
                yield [convert(row) for row in chunk]

    def hourly(self, level: str, home_id: str | None = None) -> list[tuple]:
        view = {"device": "device_1h", "home": "home_1h"}[level]
        keys = "home_id, device_id, bucket" if level == "device" else "home_id, bucket"
        cols = ("home_id, device_id, bucket" if level == "device" else "home_id, bucket") + \
            ", mean_power_w, min_power_w, max_power_w, energy_wh, samples, minutes, power_wh"
        rows = self.conn.execute(
            f"SELECT {cols} FROM {view} WHERE (%(h)s::text IS NULL OR home_id = %(h)s) ORDER BY {keys}",
            {"h": home_id})
        return [tuple(row) for row in rows]

    def home_last_seen(self) -> dict[str, datetime | None]:
        rows = self.conn.execute("SELECT home_id, max(last_seen) FROM devices GROUP BY home_id")
        return {h: t for h, t in rows}

    def dead_letters(self) -> list[DeadLetter]:
        rows = self.conn.execute(
            "SELECT received_at, topic, payload, reason, step, error, payload_bytes, payload_hash "
            "FROM dead_letter ORDER BY received_at, id")
        return [table_rows.dead_letter_from_row(row) for row in rows]

    def devices(self) -> list[DeviceInfo]:
        return [table_rows.device_info_from_row(row) for row in self.conn.execute(_DEVICES)]

    def forecasts(self, home_id: str | None = None, resolution_min: int | None = None,
                  made_at: datetime | None = None) -> list[Forecast]:
        rows = self.conn.execute(
            "SELECT home_id, made_at, target_ts, resolution_min, horizon_min, yhat_w, lower_w, upper_w, "
            "model FROM forecasts WHERE (%(h)s::text IS NULL OR home_id = %(h)s) "
            "AND (%(r)s::int IS NULL OR resolution_min = %(r)s) "
            "AND (%(m)s::timestamptz IS NULL OR made_at = %(m)s) "
            "ORDER BY home_id, resolution_min, made_at, target_ts",
            {"h": home_id, "r": resolution_min, "m": made_at})
        return [Forecast(*row) for row in rows]

    def forecast_scores(self, home_id: str | None = None) -> list[ForecastScore]:
        rows = self.conn.execute(
            "SELECT * FROM forecast_scores WHERE (%(h)s::text IS NULL OR home_id = %(h)s) "
            "ORDER BY home_id, resolution_min, horizon_min", {"h": home_id})
        return [ForecastScore(*row) for row in rows]

    def anomalies(self, home_id: str | None = None, open_only: bool = False) -> list[Anomaly]:
        rows = self.conn.execute(
            "SELECT * FROM anomalies WHERE (%(h)s::text IS NULL OR home_id = %(h)s) "
            "AND (NOT %(o)s OR ended_at IS NULL) ORDER BY home_id, started_at, device_id, kind",
            {"h": home_id, "o": open_only})
        return [table_rows.anomaly_from_row(row) for row in rows]

    def recommendations(self, home_id: str | None = None) -> list[StoredRecommendation]:
        rows = self.conn.execute(
            "SELECT * FROM recommendations WHERE (%(h)s::text IS NULL OR home_id = %(h)s) "
            "ORDER BY home_id, kind, device_id", {"h": home_id})
        return [table_rows.recommendation_from_row(row) for row in rows]

    def set_recommendation_status(self, home_id: str, kind: str, device_id: str, status: str,
                                  by: str) -> bool:
        check_recommendation_status(status)
        cur = self.conn.execute(
            "UPDATE recommendations SET status = %s, status_changed_at = now(), status_changed_by = %s "
            "WHERE home_id = %s AND kind = %s AND device_id = %s",
            (status, by, home_id, kind, device_id))
        return cur.rowcount == 1

    def tariffs(self) -> list[TariffRow]:
        rows = self.conn.execute("SELECT * FROM tariffs ORDER BY home_id, effective_from")
        return [table_rows.tariff_from_row(row) for row in rows]

    def upsert_tariffs(self, rows: Sequence[TariffRow]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO tariffs VALUES (%s, %s, %s) ON CONFLICT (home_id, effective_from) "
                "DO UPDATE SET spec_json = excluded.spec_json",
                [(r.home_id, r.effective_from, r.spec_json) for r in rows])

    def close(self) -> None:
        self.conn.close()
