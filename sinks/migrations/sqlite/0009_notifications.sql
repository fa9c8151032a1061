-- Notifications (pipeline/notify): a user's Apprise targets, what they want and when, the notices
-- made for them (the dedupe log and the outbox in one: a notice is keyed by user and event) and
-- the notifier's cursor. Times are integer microseconds since the epoch.
CREATE TABLE IF NOT EXISTS notify_targets (
    id         INTEGER PRIMARY KEY,
    username   TEXT    NOT NULL,
    label      TEXT    NOT NULL DEFAULT '',
    url        TEXT    NOT NULL,  -- an Apprise URL, a secret: never logged, shown masked
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_targets_user ON notify_targets (username);

CREATE TABLE IF NOT EXISTS notify_prefs (
    username    TEXT PRIMARY KEY,
    kinds       TEXT NOT NULL DEFAULT 'anomaly,budget,recommendation',
    quiet_start TEXT,  -- HH:MM local; NULL or equal to quiet_end: no quiet hours
    quiet_end   TEXT,
    timezone    TEXT   -- NULL: the home's
);

CREATE TABLE IF NOT EXISTS notifications (
    username     TEXT    NOT NULL,
    dedupe_key   TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    home_id      TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    event_at     INTEGER NOT NULL,
    queued_at    INTEGER NOT NULL,
    sent_at      INTEGER,           -- NULL: waiting (quiet hours, a failed target, no target yet)
    delivered_to TEXT    NOT NULL DEFAULT '',  -- target ids already sent to, so a retry skips them
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    PRIMARY KEY (username, dedupe_key)
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (username) WHERE sent_at IS NULL;

CREATE TABLE IF NOT EXISTS notify_cursor (
    name TEXT    PRIMARY KEY,
    at   INTEGER NOT NULL
);
