-- Forecast history grows with every issue (120 rows per home and hour): a hypertable, compressed
-- after a week and dropped after 90 days. Scores, anomalies and recommendations are small.
SELECT create_hypertable('forecasts', 'made_at', chunk_time_interval => INTERVAL '1 day',
                         if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE forecasts SET (timescaledb.compress,
                           timescaledb.compress_segmentby = 'home_id, resolution_min',
                           timescaledb.compress_orderby = 'made_at, target_ts');
SELECT add_compression_policy('forecasts', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('forecasts', INTERVAL '90 days', if_not_exists => TRUE);
