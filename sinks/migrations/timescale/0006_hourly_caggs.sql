-- The continuous aggregates gain the viewer's two columns (see postgres_plain/0006): minutes and
-- power_wh. A continuous aggregate cannot be altered, so it is created again (and re-materialised
-- by the first refresh; real-time aggregation answers correctly meanwhile).
DROP MATERIALIZED VIEW IF EXISTS device_1h;
DROP MATERIALIZED VIEW IF EXISTS home_1h;

CREATE MATERIALIZED VIEW device_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT home_id, device_id, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples,
       count(*) AS minutes, sum(mean_power_w) / 60.0 AS power_wh
FROM device_1m GROUP BY home_id, device_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW home_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT home_id, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples,
       count(*) AS minutes, sum(mean_power_w) / 60.0 AS power_wh
FROM home_1m GROUP BY home_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('device_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('home_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);
