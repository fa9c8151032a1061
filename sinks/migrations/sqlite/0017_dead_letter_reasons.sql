-- A message may be stopped for several reasons at once (a Shelly status with two bad meters, an
-- HTTP batch with two bad readings), each its own dead letter. The unique key (received_at, topic,
-- payload_hash) kept only the first of them; it now holds reason_hash too, the SHA-256 of the
-- letter's step and reason (of the step alone for an imported row: sinks/rows.py,
-- dead_letter_row), so a replayed batch or a file imported again still adds nothing. Rows
-- written before this keep reason_hash '' and stay unique as they were.
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt.
CREATE TABLE dead_letter_0017 (
    id            INTEGER PRIMARY KEY,
    received_at   INTEGER NOT NULL,
    topic         TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    payload_hash  TEXT    NOT NULL,
    step          TEXT    NOT NULL DEFAULT 'decode',
    error         TEXT    NOT NULL DEFAULT '',
    payload_bytes INTEGER NOT NULL DEFAULT -1,
    reason_hash   TEXT    NOT NULL DEFAULT '',
    UNIQUE (received_at, topic, payload_hash, reason_hash)
);

INSERT INTO dead_letter_0017 (id, received_at, topic, payload, reason, payload_hash, step, error, payload_bytes)
SELECT id, received_at, topic, payload, reason, payload_hash, step, error, payload_bytes FROM dead_letter;

DROP TABLE dead_letter;

ALTER TABLE dead_letter_0017 RENAME TO dead_letter;
