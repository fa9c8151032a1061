-- A household's acknowledgement of an alert (the viewer's Alerts page): who and when. Its own
-- table, not columns of anomalies: the pipeline rewrites anomaly rows as they close, and an
-- acknowledgement must outlive that. Same table as postgres/0013_anomaly_acks.sql.
CREATE TABLE IF NOT EXISTS anomaly_acks (
    home_id         TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    acknowledged_at INTEGER NOT NULL,
    acknowledged_by TEXT    NOT NULL,
    PRIMARY KEY (home_id, device_id, kind, started_at)
);
