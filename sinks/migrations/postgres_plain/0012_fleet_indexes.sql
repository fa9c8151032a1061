-- The Fleet page reads every home at once by time: energy today from home_1h, the last 24 h of
-- demand from home_1m, the newest hourly forecasts. The primary keys start with home_id, so
-- without these each of those scanned the tables' whole history. Covering (INCLUDE), so the sums
-- can be index-only scans; the demand one replaces 0005's home_1m_bucket. (TimescaleDB needs
-- none of them: its hypertables and continuous aggregates are chunked by time.)
CREATE INDEX IF NOT EXISTS home_1m_bucket_power ON home_1m (bucket) INCLUDE (mean_power_w);
DROP INDEX IF EXISTS home_1m_bucket;
CREATE INDEX IF NOT EXISTS home_1h_bucket ON home_1h (bucket) INCLUDE (home_id, energy_wh);
CREATE INDEX IF NOT EXISTS forecasts_made ON forecasts (resolution_min, made_at, home_id);
