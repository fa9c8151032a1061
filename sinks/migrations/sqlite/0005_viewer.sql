-- The viewer: users and their homes, sessions, sign-in attempts, device commands and their
-- acknowledgements, and the audit log. Same tables as postgres/0005_viewer.sql; times are integer
-- microseconds since the epoch. SQLite does not enforce foreign keys on our connections, so the
-- code that removes a user removes its memberships and sessions in the same transaction.
CREATE TABLE IF NOT EXISTS users (
    username            TEXT    PRIMARY KEY,
    password_hash       TEXT    NOT NULL,
    role                TEXT    NOT NULL CHECK (role IN ('homeowner', 'operator', 'admin')),
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS user_homes (
    username TEXT NOT NULL,
    home_id  TEXT NOT NULL,
    PRIMARY KEY (username, home_id)
) WITHOUT ROWID;

-- Only a hash of the session token is stored: a copy of this table opens no session.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT    PRIMARY KEY,
    username   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);

CREATE TABLE IF NOT EXISTS signin_attempts (
    id       INTEGER PRIMARY KEY,
    username TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    ok       INTEGER NOT NULL,
    client   TEXT
);
CREATE INDEX IF NOT EXISTS signin_attempts_user ON signin_attempts (username, at);

-- A command the viewer published to shems/<home>/<device>/set; run_at is set for a schedule.
CREATE TABLE IF NOT EXISTS device_commands (
    command_id TEXT    PRIMARY KEY,
    home_id    TEXT    NOT NULL,
    device_id  TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('on', 'off')),
    run_at     INTEGER,
    issued_by  TEXT    NOT NULL,
    issued_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS device_commands_device ON device_commands (home_id, device_id, issued_at);
CREATE INDEX IF NOT EXISTS device_commands_user ON device_commands (issued_by, issued_at);

-- What devices answered on shems/<home>/<device>/ack, written by the flow (one row per status).
CREATE TABLE IF NOT EXISTS command_acks (
    command_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    home_id     TEXT    NOT NULL,
    device_id   TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    message     TEXT    NOT NULL,
    PRIMARY KEY (command_id, status)
);

CREATE TABLE IF NOT EXISTS audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    username  TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    home_id   TEXT,
    device_id TEXT,
    detail    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);

-- The fleet page reads the newest minutes of every home: without this, a scan of all of home_1m.
CREATE INDEX IF NOT EXISTS home_1m_bucket ON home_1m (bucket);
