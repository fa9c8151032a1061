-- Timestamps are INTEGER microseconds since the Unix epoch, UTC: exact, compact and fast to range-scan.
CREATE TABLE IF NOT EXISTS readings (
    home_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    power_w   REAL    NOT NULL,
    energy_wh REAL,
    voltage_v REAL,
    current_a REAL,
    PRIMARY KEY (home_id, device_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);

CREATE TABLE IF NOT EXISTS device_1m (
    home_id      TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    mean_power_w REAL    NOT NULL,
    min_power_w  REAL    NOT NULL,
    max_power_w  REAL    NOT NULL,
    energy_wh    REAL    NOT NULL,
    samples      INTEGER NOT NULL,
    PRIMARY KEY (home_id, device_id, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS home_1m (
    home_id      TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    mean_power_w REAL    NOT NULL,
    min_power_w  REAL    NOT NULL,
    max_power_w  REAL    NOT NULL,
    energy_wh    REAL    NOT NULL,
    samples      INTEGER NOT NULL,
    PRIMARY KEY (home_id, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS devices (
    home_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    source     TEXT NOT NULL,
    first_seen INTEGER,
    last_seen  INTEGER,
    vendor_id  TEXT,
    channel    INTEGER,
    timezone   TEXT,
    PRIMARY KEY (home_id, device_id)
);

CREATE TABLE IF NOT EXISTS dead_letter (
    id           INTEGER PRIMARY KEY,
    received_at  INTEGER NOT NULL,
    topic        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    payload_hash TEXT    NOT NULL,
    UNIQUE (received_at, topic, payload_hash)
);

CREATE TABLE IF NOT EXISTS late_readings (
    home_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    PRIMARY KEY (home_id, device_id, ts)
) WITHOUT ROWID;

-- Hourly rollups, the same definition as PostgreSQL's views / TimescaleDB's continuous aggregates.
CREATE VIEW IF NOT EXISTS device_1h AS
SELECT home_id, device_id, bucket - bucket % 3600000000 AS bucket,
       SUM(mean_power_w * samples) / SUM(samples) AS mean_power_w,
       MIN(min_power_w) AS min_power_w, MAX(max_power_w) AS max_power_w,
       SUM(energy_wh) AS energy_wh, SUM(samples) AS samples
FROM device_1m GROUP BY home_id, device_id, bucket - bucket % 3600000000;

CREATE VIEW IF NOT EXISTS home_1h AS
SELECT home_id, bucket - bucket % 3600000000 AS bucket,
       SUM(mean_power_w * samples) / SUM(samples) AS mean_power_w,
       MIN(min_power_w) AS min_power_w, MAX(max_power_w) AS max_power_w,
       SUM(energy_wh) AS energy_wh, SUM(samples) AS samples
FROM home_1m GROUP BY home_id, bucket - bucket % 3600000000;
