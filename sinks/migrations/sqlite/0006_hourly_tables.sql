-- The hourly rollups become tables kept current by the store on every write (see
-- postgres_plain/0006_hourly_tables.sql for the two added columns).
DROP VIEW IF EXISTS device_1h;
DROP VIEW IF EXISTS home_1h;

CREATE TABLE device_1h (
    home_id      TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    mean_power_w REAL    NOT NULL,
    min_power_w  REAL    NOT NULL,
    max_power_w  REAL    NOT NULL,
    energy_wh    REAL    NOT NULL,
    samples      INTEGER NOT NULL,
    minutes      INTEGER NOT NULL,
    power_wh     REAL    NOT NULL,
    PRIMARY KEY (home_id, device_id, bucket)
) WITHOUT ROWID;

CREATE TABLE home_1h (
    home_id      TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    mean_power_w REAL    NOT NULL,
    min_power_w  REAL    NOT NULL,
    max_power_w  REAL    NOT NULL,
    energy_wh    REAL    NOT NULL,
    samples      INTEGER NOT NULL,
    minutes      INTEGER NOT NULL,
    power_wh     REAL    NOT NULL,
    PRIMARY KEY (home_id, bucket)
) WITHOUT ROWID;

INSERT INTO device_1h
SELECT home_id, device_id, bucket - bucket % 3600000000,
       SUM(mean_power_w * samples) / SUM(samples), MIN(min_power_w), MAX(max_power_w),
       SUM(energy_wh), SUM(samples), COUNT(*), SUM(mean_power_w) / 60.0
FROM device_1m GROUP BY home_id, device_id, bucket - bucket % 3600000000;

INSERT INTO home_1h
SELECT home_id, bucket - bucket % 3600000000,
       SUM(mean_power_w * samples) / SUM(samples), MIN(min_power_w), MAX(max_power_w),
       SUM(energy_wh), SUM(samples), COUNT(*), SUM(mean_power_w) / 60.0
FROM home_1m GROUP BY home_id, bucket - bucket % 3600000000;
