-- The fleet's demand minute by minute: the sum of every home's mean power in home_1m and how many
-- homes it sums, kept by the store on every write (sinks/postgres.py: each batch adds the change
-- it makes to its minutes, so writers running at once add up instead of overwriting each
-- other). The Fleet page's last 24 h of demand reads 1,440 rows of it instead of every home's
-- minutes (14 million rows a day at 10,000 homes). A plain table with TimescaleDB too: it is
-- small, and kept by the write itself, so it never waits for a refresh policy.
CREATE TABLE IF NOT EXISTS fleet_1m (
    bucket  timestamptz      PRIMARY KEY,
    power_w double precision NOT NULL,
    homes   bigint           NOT NULL
);

INSERT INTO fleet_1m
SELECT bucket, sum(mean_power_w), count(*) FROM home_1m GROUP BY bucket
ON CONFLICT (bucket) DO UPDATE SET power_w = excluded.power_w, homes = excluded.homes;

-- Each home's energy per UTC day (the sum of its home_1m energy), kept like fleet_1m by adding
-- each batch's change: the Fleet page ranks every home by its energy today, one row a home
-- instead of one an hour.
CREATE TABLE IF NOT EXISTS home_1d (
    home_id   text             NOT NULL,
    day       timestamptz      NOT NULL,  -- 00:00 UTC
    energy_wh double precision NOT NULL,
    PRIMARY KEY (home_id, day)
);

INSERT INTO home_1d
SELECT home_id, date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', sum(energy_wh)
FROM home_1m GROUP BY 1, 2
ON CONFLICT (home_id, day) DO UPDATE SET energy_wh = excluded.energy_wh;

CREATE INDEX IF NOT EXISTS home_1d_day ON home_1d (day) INCLUDE (home_id, energy_wh);

-- The fleet's forecast: each home's newest forecast (per resolution) in forecast_newest, and in
-- fleet_forecast the sums of those newest forecasts by the time they were made and the hour they
-- forecast; a new forecast moves its home's share from its old newest to its new one (additions
-- again, for writers at once). The Fleet page sums the few made in the last hours instead of
-- grouping every home's forecasts. forecast_newest outlives TimescaleDB's retention of forecasts:
-- a home back after 90 days has nothing left to move, and the old share is never read again.
CREATE TABLE IF NOT EXISTS forecast_newest (
    home_id        text        NOT NULL,
    resolution_min integer     NOT NULL,
    made_at        timestamptz NOT NULL,
    PRIMARY KEY (home_id, resolution_min)
);

CREATE TABLE IF NOT EXISTS fleet_forecast (
    resolution_min integer          NOT NULL,
    made_at        timestamptz      NOT NULL,
    target_ts      timestamptz      NOT NULL,
    yhat_w         double precision NOT NULL,
    lower_w        double precision NOT NULL,
    upper_w        double precision NOT NULL,
    homes          bigint           NOT NULL,  -- homes whose newest forecast this is (0: all moved on)
    PRIMARY KEY (resolution_min, made_at, target_ts)
);

INSERT INTO forecast_newest
SELECT home_id, resolution_min, max(made_at) FROM forecasts GROUP BY home_id, resolution_min
ON CONFLICT (home_id, resolution_min) DO UPDATE SET made_at = excluded.made_at;

INSERT INTO fleet_forecast
SELECT f.resolution_min, f.made_at, f.target_ts, sum(f.yhat_w), sum(f.lower_w), sum(f.upper_w), count(*)
FROM forecast_newest n JOIN forecasts f ON f.home_id = n.home_id
  AND f.resolution_min = n.resolution_min AND f.made_at = n.made_at
GROUP BY f.resolution_min, f.made_at, f.target_ts
ON CONFLICT (resolution_min, made_at, target_ts) DO UPDATE SET yhat_w = excluded.yhat_w,
  lower_w = excluded.lower_w, upper_w = excluded.upper_w, homes = excluded.homes;

-- The savings measurement reads only the accepted recommendations (a fleet's are mostly new or
-- dismissed).
CREATE INDEX IF NOT EXISTS recommendations_accepted ON recommendations (home_id, kind, device_id)
    WHERE status = 'accepted';
