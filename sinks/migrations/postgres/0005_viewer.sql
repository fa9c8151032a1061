-- The viewer: users and their homes, sessions, sign-in attempts, device commands and their
-- acknowledgements, and the audit log. Same tables as sqlite/0005_viewer.sql.
CREATE TABLE IF NOT EXISTS users (
    username            text        PRIMARY KEY,
    password_hash       text        NOT NULL,
    role                text        NOT NULL CHECK (role IN ('homeowner', 'operator', 'admin')),
    created_at          timestamptz NOT NULL,
    password_changed_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS user_homes (
    username text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    home_id  text NOT NULL,
    PRIMARY KEY (username, home_id)
);

-- Only a hash of the session token is stored: a copy of this table opens no session.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash text        PRIMARY KEY,
    username   text        NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);

CREATE TABLE IF NOT EXISTS signin_attempts (
    id       bigserial   PRIMARY KEY,
    username text        NOT NULL,
    at       timestamptz NOT NULL,
    ok       boolean     NOT NULL,
    client   text
);
CREATE INDEX IF NOT EXISTS signin_attempts_user ON signin_attempts (username, at);

-- A command the viewer published to shems/<home>/<device>/set; run_at is set for a schedule.
CREATE TABLE IF NOT EXISTS device_commands (
    command_id text        PRIMARY KEY,
    home_id    text        NOT NULL,
    device_id  text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('on', 'off')),
    run_at     timestamptz,
    issued_by  text        NOT NULL,
    issued_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS device_commands_device ON device_commands (home_id, device_id, issued_at);
CREATE INDEX IF NOT EXISTS device_commands_user ON device_commands (issued_by, issued_at);

-- What devices answered on shems/<home>/<device>/ack, written by the flow (one row per status).
CREATE TABLE IF NOT EXISTS command_acks (
    command_id  text        NOT NULL,
    status      text        NOT NULL,
    home_id     text        NOT NULL,
    device_id   text        NOT NULL,
    state       text        NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    message     text        NOT NULL,
    PRIMARY KEY (command_id, status)
);

CREATE TABLE IF NOT EXISTS audit_log (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL,
    username  text        NOT NULL,
    action    text        NOT NULL,
    home_id   text,
    device_id text,
    detail    text        NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);

-- The fleet page reads the newest minutes of every home: without this, a scan of all of home_1m.
-- (A TimescaleDB hypertable has its own bucket index already; this one is then redundant but small.)
CREATE INDEX IF NOT EXISTS home_1m_bucket ON home_1m (bucket);
