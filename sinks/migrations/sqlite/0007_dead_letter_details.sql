-- Where a dead letter was stopped and what the whole original was: the payload column keeps only
-- a prefix (a hostile device may send megabytes), so its length and SHA-256 identify it.
ALTER TABLE dead_letter ADD COLUMN step TEXT NOT NULL DEFAULT 'decode';
ALTER TABLE dead_letter ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letter ADD COLUMN payload_bytes INTEGER NOT NULL DEFAULT -1;
