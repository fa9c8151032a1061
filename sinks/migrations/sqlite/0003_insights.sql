-- Same tables as PostgreSQL's 0003_insights.sql; times are integer microseconds since the epoch.
CREATE TABLE IF NOT EXISTS forecasts (
    home_id        TEXT    NOT NULL,
    resolution_min INTEGER NOT NULL,
    made_at        INTEGER NOT NULL,
    target_ts      INTEGER NOT NULL,
    horizon_min    INTEGER NOT NULL,
    yhat_w         REAL    NOT NULL,
    lower_w        REAL    NOT NULL,
    upper_w        REAL    NOT NULL,
    model          TEXT    NOT NULL,
    PRIMARY KEY (home_id, resolution_min, made_at, target_ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS forecasts_target ON forecasts (home_id, resolution_min, target_ts);

CREATE TABLE IF NOT EXISTS forecast_scores (
    home_id          TEXT    NOT NULL,
    resolution_min   INTEGER NOT NULL,
    horizon_min      INTEGER NOT NULL,
    model            TEXT    NOT NULL,
    n                INTEGER NOT NULL,
    mae_w            REAL    NOT NULL,
    naive_day_mae_w  REAL    NOT NULL,
    naive_week_mae_w REAL    NOT NULL,
    coverage         REAL    NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (home_id, resolution_min, horizon_min)
);

CREATE TABLE IF NOT EXISTS anomalies (
    home_id    TEXT    NOT NULL,
    device_id  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER,
    score      REAL    NOT NULL,
    message    TEXT    NOT NULL,
    PRIMARY KEY (home_id, device_id, kind, started_at)
);
CREATE INDEX IF NOT EXISTS anomalies_open ON anomalies (home_id) WHERE ended_at IS NULL;

CREATE TABLE IF NOT EXISTS recommendations (
    home_id           TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    device_id         TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    title             TEXT    NOT NULL,
    detail            TEXT    NOT NULL,
    kwh_per_month     REAL    NOT NULL,
    money_per_month   REAL    NOT NULL,
    currency          TEXT    NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'new'
                      CHECK (status IN ('new', 'accepted', 'dismissed')),
    status_changed_at INTEGER,
    status_changed_by TEXT,
    PRIMARY KEY (home_id, kind, device_id)
);

CREATE TABLE IF NOT EXISTS tariffs (
    home_id        TEXT    NOT NULL,
    effective_from INTEGER NOT NULL,
    spec_json      TEXT    NOT NULL,
    PRIMARY KEY (home_id, effective_from)
);
