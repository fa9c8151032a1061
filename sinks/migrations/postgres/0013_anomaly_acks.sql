-- A household's acknowledgement of an alert (the viewer's Alerts page): who and when. Its own
-- table, not columns of anomalies: the pipeline rewrites anomaly rows as they close, and an
-- acknowledgement must outlive that. Same table as sqlite/0013_anomaly_acks.sql.
CREATE TABLE IF NOT EXISTS anomaly_acks (
    home_id         text        NOT NULL,
    device_id       text        NOT NULL,
    kind            text        NOT NULL,
    started_at      timestamptz NOT NULL,
    acknowledged_at timestamptz NOT NULL,
    acknowledged_by text        NOT NULL,
    PRIMARY KEY (home_id, device_id, kind, started_at)
);
