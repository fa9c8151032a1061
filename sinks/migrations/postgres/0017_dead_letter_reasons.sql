-- A message may be stopped for several reasons at once (a Shelly status with two bad meters, an
-- HTTP batch with two bad readings), each its own dead letter. The unique key (received_at, topic,
-- payload_hash) kept only the first of them; it now holds reason_hash too, the SHA-256 of the
-- letter's step and reason (of the step alone for an imported row: sinks/rows.py,
-- dead_letter_row), so a replayed batch or a file imported again still adds nothing. Rows
-- written before this keep reason_hash '' and stay unique as they were.
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS reason_hash text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS dead_letter_once ON dead_letter (received_at, topic, payload_hash, reason_hash);
ALTER TABLE dead_letter DROP CONSTRAINT IF EXISTS dead_letter_received_at_topic_payload_hash_key;
