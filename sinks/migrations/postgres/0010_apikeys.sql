-- API keys of the HTTP ingest service (shems apikey add/list/revoke): one home per key. Only the
-- SHA-256 of a key is stored (keys are 192 random bits, so a fast hash is enough); the key itself
-- is printed once. Same table as sqlite/0010_apikeys.sql.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text        PRIMARY KEY,
    key_hash   text        NOT NULL UNIQUE,
    home_id    text        NOT NULL,
    label      text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_home ON api_keys (home_id);
