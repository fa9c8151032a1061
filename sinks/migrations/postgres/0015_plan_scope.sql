-- A plan for some devices only (the viewer's "cheapest before HH:MM" and an accepted load-shift
-- recommendation): it replaces the home's other plans for those devices only. NULL: the whole
-- home (shems plan, the executor's re-plans of it). JSON list of device ids.
ALTER TABLE plans ADD COLUMN IF NOT EXISTS scope TEXT;
