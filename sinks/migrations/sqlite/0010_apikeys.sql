-- API keys of the HTTP ingest service (shems apikey add/list/revoke): one home per key. Only the
-- SHA-256 of a key is stored (keys are 192 random bits, so a fast hash is enough); the key itself
-- is printed once. Times are integer microseconds since the epoch.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT    PRIMARY KEY,
    key_hash   TEXT    NOT NULL UNIQUE,
    home_id    TEXT    NOT NULL,
    label      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_home ON api_keys (home_id);
