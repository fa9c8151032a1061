-- The fleet's demand minute by minute: the sum of every home's mean power in home_1m and how many
-- homes it sums, kept by the store on every write (sinks/sqlite.py, _refresh_fleet). The Fleet
-- page's last 24 h of demand reads 1,440 rows of it instead of every home's minutes (14 million
-- rows a day at 10,000 homes).
CREATE TABLE IF NOT EXISTS fleet_1m (
    bucket  INTEGER PRIMARY KEY,
    power_w REAL    NOT NULL,
    homes   INTEGER NOT NULL
);

INSERT OR REPLACE INTO fleet_1m
SELECT bucket, SUM(mean_power_w), COUNT(*) FROM home_1m GROUP BY bucket;

-- Each home's energy per UTC day (the sum of its home_1m energy), recounted from home_1h for the
-- days a batch touched: the Fleet page ranks every home by its energy today, one row a home
-- instead of one an hour.
CREATE TABLE IF NOT EXISTS home_1d (
    home_id   TEXT    NOT NULL,
    day       INTEGER NOT NULL,  -- 00:00 UTC
    energy_wh REAL    NOT NULL,
    PRIMARY KEY (home_id, day)
) WITHOUT ROWID;

INSERT OR REPLACE INTO home_1d
SELECT home_id, bucket - bucket % 86400000000, SUM(energy_wh) FROM home_1h
GROUP BY home_id, bucket - bucket % 86400000000;

CREATE INDEX IF NOT EXISTS home_1d_day ON home_1d (day, home_id, energy_wh);

-- The fleet's forecast: each home's newest forecast (per resolution) in forecast_newest, and in
-- fleet_forecast the sums of those newest forecasts by the time they were made and the hour they
-- forecast; a new forecast moves its home's share from its old newest to its new one. The Fleet
-- page sums the few made in the last hours instead of grouping every home's forecasts.
CREATE TABLE IF NOT EXISTS forecast_newest (
    home_id        TEXT    NOT NULL,
    resolution_min INTEGER NOT NULL,
    made_at        INTEGER NOT NULL,
    PRIMARY KEY (home_id, resolution_min)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS fleet_forecast (
    resolution_min INTEGER NOT NULL,
    made_at        INTEGER NOT NULL,
    target_ts      INTEGER NOT NULL,
    yhat_w         REAL    NOT NULL,
    lower_w        REAL    NOT NULL,
    upper_w        REAL    NOT NULL,
    homes          INTEGER NOT NULL,  -- homes whose newest forecast this is (0: all moved on)
    PRIMARY KEY (resolution_min, made_at, target_ts)
) WITHOUT ROWID;

INSERT OR REPLACE INTO forecast_newest
SELECT home_id, resolution_min, MAX(made_at) FROM forecasts GROUP BY home_id, resolution_min;

INSERT OR REPLACE INTO fleet_forecast
SELECT f.resolution_min, f.made_at, f.target_ts, SUM(f.yhat_w), SUM(f.lower_w), SUM(f.upper_w), COUNT(*)
FROM forecast_newest n JOIN forecasts f ON f.home_id = n.home_id
  AND f.resolution_min = n.resolution_min AND f.made_at = n.made_at
GROUP BY f.resolution_min, f.made_at, f.target_ts;

-- The savings measurement reads only the accepted recommendations (a fleet's are mostly new or
-- dismissed).
CREATE INDEX IF NOT EXISTS recommendations_accepted ON recommendations (home_id, kind, device_id)
    WHERE status = 'accepted';
