-- Plans a homeowner accepted and the commands that carry them out (pipeline/tools/plan_executor.py).
-- A plan keeps the problem it solved (JSON), so the executor can plan the rest of the horizon
-- again when a device does not follow. Times are integer microseconds since the epoch.
CREATE TABLE IF NOT EXISTS plans (
    plan_id        TEXT    PRIMARY KEY,
    home_id        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('proposed', 'active', 'replaced', 'done')),
    replaces       TEXT,              -- the plan this one re-planned
    accepted_by    TEXT    NOT NULL,
    accepted_at    INTEGER NOT NULL,
    start_at       INTEGER NOT NULL,
    end_at         INTEGER NOT NULL,
    slot_s         REAL    NOT NULL,
    cost           REAL    NOT NULL,
    baseline_cost  REAL    NOT NULL,
    currency       TEXT    NOT NULL,
    battery_device TEXT,
    ev_device      TEXT,
    problem        TEXT    NOT NULL,  -- JSON, pipeline.energy.plan_commands.problem_to_json
    schedule       TEXT    NOT NULL   -- JSON, one object per slot (shems plan --json's schedule)
);
CREATE INDEX IF NOT EXISTS plans_home ON plans (home_id, accepted_at);

CREATE TABLE IF NOT EXISTS plan_commands (
    command_id TEXT    PRIMARY KEY,
    plan_id    TEXT    NOT NULL,
    home_id    TEXT    NOT NULL,
    device_id  TEXT    NOT NULL,
    run_at     INTEGER NOT NULL,
    until_at   INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('switch', 'battery', 'ev_limit')),
    state      TEXT    NOT NULL CHECK (state IN ('on', 'off')),
    value_w    REAL,              -- the battery setpoint or EV limit
    expect_w   REAL    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('proposed', 'pending', 'sent', 'acknowledged', 'confirmed',
                                                  'not_followed', 'superseded')),
    sent_at    INTEGER,
    acked_at   INTEGER,
    checked_at INTEGER,
    measured_w REAL,
    message    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS plan_commands_due ON plan_commands (status, run_at);
CREATE INDEX IF NOT EXISTS plan_commands_plan ON plan_commands (plan_id, run_at);
