CREATE TABLE IF NOT EXISTS readings (
    home_id   text             NOT NULL,
    device_id text             NOT NULL,
    ts        timestamptz      NOT NULL,
    power_w   double precision NOT NULL,
    energy_wh double precision,
    voltage_v double precision,
    current_a double precision,
    PRIMARY KEY (home_id, device_id, ts)
);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);

CREATE TABLE IF NOT EXISTS device_1m (
    home_id      text             NOT NULL,
    device_id    text             NOT NULL,
    bucket       timestamptz      NOT NULL,
    kind         text             NOT NULL,
    mean_power_w double precision NOT NULL,
    min_power_w  double precision NOT NULL,
    max_power_w  double precision NOT NULL,
    energy_wh    double precision NOT NULL,
    samples      integer          NOT NULL,
    PRIMARY KEY (home_id, device_id, bucket)
);

CREATE TABLE IF NOT EXISTS home_1m (
    home_id      text             NOT NULL,
    bucket       timestamptz      NOT NULL,
    mean_power_w double precision NOT NULL,
    min_power_w  double precision NOT NULL,
    max_power_w  double precision NOT NULL,
    energy_wh    double precision NOT NULL,
    samples      integer          NOT NULL,
    PRIMARY KEY (home_id, bucket)
);

CREATE TABLE IF NOT EXISTS devices (
    home_id    text NOT NULL,
    device_id  text NOT NULL,
    kind       text NOT NULL,
    source     text NOT NULL,
    first_seen timestamptz,
    last_seen  timestamptz,
    vendor_id  text,
    channel    integer,
    timezone   text,
    PRIMARY KEY (home_id, device_id)
);

CREATE TABLE IF NOT EXISTS dead_letter (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    payload      text        NOT NULL,
    reason       text        NOT NULL,
    payload_hash text        NOT NULL,
    UNIQUE (received_at, topic, payload_hash)
);

CREATE TABLE IF NOT EXISTS late_readings (
    home_id   text        NOT NULL,
    device_id text        NOT NULL,
    ts        timestamptz NOT NULL,
    bucket    timestamptz NOT NULL,
    PRIMARY KEY (home_id, device_id, ts)
);
