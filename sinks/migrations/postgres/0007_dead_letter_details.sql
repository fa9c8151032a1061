-- Where a dead letter was stopped and what the whole original was: the payload column keeps only
-- a prefix (a hostile device may send megabytes), so its length and SHA-256 identify it.
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS step text NOT NULL DEFAULT 'decode';
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS error text NOT NULL DEFAULT '';
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS payload_bytes bigint NOT NULL DEFAULT -1;
