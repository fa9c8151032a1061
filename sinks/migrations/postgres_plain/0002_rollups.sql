-- Without TimescaleDB: plain views with the same names, columns and results as the continuous
-- aggregates in migrations/timescale/0002_timescale.sql.
CREATE OR REPLACE VIEW device_1h AS
SELECT home_id, device_id, date_trunc('hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples
FROM device_1m GROUP BY home_id, device_id, date_trunc('hour', bucket);

CREATE OR REPLACE VIEW home_1h AS
SELECT home_id, date_trunc('hour', bucket) AS bucket,
       sum(mean_power_w * samples) / sum(samples) AS mean_power_w,
       min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
       sum(energy_wh) AS energy_wh, sum(samples)::bigint AS samples
FROM home_1m GROUP BY home_id, date_trunc('hour', bucket);
