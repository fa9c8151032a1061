-- The Fleet page reads every home at once by time: energy today from home_1h, the last 24 h of
-- demand from home_1m, the newest hourly forecasts. The primary keys start with home_id, so
-- without these each of those scanned the tables' whole history. Covering: the page's sums are
-- read from the index alone (0005's home_1m_bucket made every minute of every home a lookup in
-- the table: 20 s for 10,000 homes' 3 hours on a cold cache).
DROP INDEX IF EXISTS home_1m_bucket;
CREATE INDEX IF NOT EXISTS home_1m_bucket_power ON home_1m (bucket, mean_power_w);
CREATE INDEX IF NOT EXISTS home_1h_bucket ON home_1h (bucket, home_id, energy_wh);
CREATE INDEX IF NOT EXISTS forecasts_made ON forecasts (resolution_min, made_at, home_id);
