-- The hourly rollups become tables kept current by the store on every write (a view grouped a
-- year of minutes on every read: seconds for one home). Same names and columns as the TimescaleDB
-- continuous aggregates, plus the viewer's two: minutes (1-minute windows in the hour) and
-- power_wh (the minutes' mean power / 60: energy that adds up across devices, gaps adding none).
DROP VIEW IF EXISTS device_1h;
DROP VIEW IF EXISTS home_1h;

CREATE TABLE device_1h (
    home_id      text             NOT NULL,
    device_id    text             NOT NULL,
    bucket       timestamptz      NOT NULL,
    mean_power_w double precision NOT NULL,
    min_power_w  double precision NOT NULL,
    max_power_w  double precision NOT NULL,
    energy_wh    double precision NOT NULL,
    samples      bigint           NOT NULL,
    minutes      bigint           NOT NULL,
    power_wh     double precision NOT NULL,
    PRIMARY KEY (home_id, device_id, bucket)
);

CREATE TABLE home_1h (
    home_id      text             NOT NULL,
    bucket       timestamptz      NOT NULL,
    mean_power_w double precision NOT NULL,
    min_power_w  double precision NOT NULL,
    max_power_w  double precision NOT NULL,
    energy_wh    double precision NOT NULL,
    samples      bigint           NOT NULL,
    minutes      bigint           NOT NULL,
    power_wh     double precision NOT NULL,
    PRIMARY KEY (home_id, bucket)
);

INSERT INTO device_1h
SELECT home_id, device_id, date_trunc('hour', bucket),
       sum(mean_power_w * samples) / sum(samples), min(min_power_w), max(max_power_w),
       sum(energy_wh), sum(samples), count(*), sum(mean_power_w) / 60.0
FROM device_1m GROUP BY home_id, device_id, date_trunc('hour', bucket);

INSERT INTO home_1h
SELECT home_id, date_trunc('hour', bucket),
       sum(mean_power_w * samples) / sum(samples), min(min_power_w), max(max_power_w),
       sum(energy_wh), sum(samples), count(*), sum(mean_power_w) / 60.0
FROM home_1m GROUP BY home_id, date_trunc('hour', bucket);
