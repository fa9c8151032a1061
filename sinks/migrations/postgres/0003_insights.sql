-- Forecasts, their running scores, anomalies, recommendations and tariffs.
-- Power is mean power in W over a slot (comparable with the aggregates); see pipeline/records.py.
CREATE TABLE IF NOT EXISTS forecasts (
    home_id        text             NOT NULL,
    resolution_min integer          NOT NULL,
    made_at        timestamptz      NOT NULL,
    target_ts      timestamptz      NOT NULL,
    horizon_min    integer          NOT NULL,
    yhat_w         double precision NOT NULL,
    lower_w        double precision NOT NULL,
    upper_w        double precision NOT NULL,
    model          text             NOT NULL,
    PRIMARY KEY (home_id, resolution_min, made_at, target_ts)
);
CREATE INDEX IF NOT EXISTS forecasts_target ON forecasts (home_id, resolution_min, target_ts);

CREATE TABLE IF NOT EXISTS forecast_scores (
    home_id          text             NOT NULL,
    resolution_min   integer          NOT NULL,
    horizon_min      integer          NOT NULL,
    model            text             NOT NULL,
    n                integer          NOT NULL,
    mae_w            double precision NOT NULL,
    naive_day_mae_w  double precision NOT NULL,
    naive_week_mae_w double precision NOT NULL,
    coverage         double precision NOT NULL,
    updated_at       timestamptz      NOT NULL,
    PRIMARY KEY (home_id, resolution_min, horizon_min)
);

-- One row per anomaly; device_id '' is the home's total. Open while ended_at IS NULL.
CREATE TABLE IF NOT EXISTS anomalies (
    home_id    text             NOT NULL,
    device_id  text             NOT NULL,
    kind       text             NOT NULL,
    started_at timestamptz      NOT NULL,
    ended_at   timestamptz,
    score      double precision NOT NULL,
    message    text             NOT NULL,
    PRIMARY KEY (home_id, device_id, kind, started_at)
);
CREATE INDEX IF NOT EXISTS anomalies_open ON anomalies (home_id) WHERE ended_at IS NULL;

-- One row per (home, kind, device): a recommendation is refreshed, never repeated; its status
-- (new / accepted / dismissed) is the homeowner's and is never overwritten by the generator.
CREATE TABLE IF NOT EXISTS recommendations (
    home_id           text             NOT NULL,
    kind              text             NOT NULL,
    device_id         text             NOT NULL,
    created_at        timestamptz      NOT NULL,
    updated_at        timestamptz      NOT NULL,
    title             text             NOT NULL,
    detail            text             NOT NULL,
    kwh_per_month     double precision NOT NULL,
    money_per_month   double precision NOT NULL,
    currency          text             NOT NULL,
    status            text             NOT NULL DEFAULT 'new'
                      CHECK (status IN ('new', 'accepted', 'dismissed')),
    status_changed_at timestamptz,
    status_changed_by text,
    PRIMARY KEY (home_id, kind, device_id)
);

-- Tariff history: home_id '*' is the default for every home; spec_json is pipeline.tariff's form.
CREATE TABLE IF NOT EXISTS tariffs (
    home_id        text        NOT NULL,
    effective_from timestamptz NOT NULL,
    spec_json      text        NOT NULL,
    PRIMARY KEY (home_id, effective_from)
);
