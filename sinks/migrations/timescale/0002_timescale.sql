-- With TimescaleDB: hypertables, compression and retention of raw readings, and hourly
-- continuous aggregates. Real-time aggregation (materialized_only = false) makes a query correct
-- whether or not a refresh policy has run: the store never depends on a policy for correctness.
-- Policies need the server's background workers; on installations where scheduled jobs fail,
-- `CALL run_job(id)` runs them (the tests do).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('device_1m', 'bucket', chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('home_1m', 'bucket', chunk_time_interval => INTERVAL '7 days',
                         if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'home_id, device_id',
                          timescaledb.compress_orderby = 'ts');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE);
-- Raw readings are kept 90 days; the 1-minute and hourly aggregates are kept for good.
SELECT add_retention_policy('readings', INTERVAL '90 days', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS device_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT home_id, device_id, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples
FROM device_1m GROUP BY home_id, device_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS home_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT home_id, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples
FROM home_1m GROUP BY home_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('device_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('home_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);
