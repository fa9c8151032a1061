-- Plans a homeowner accepted and the commands that carry them out (pipeline/tools/plan_executor.py).
-- A plan keeps the problem it solved (JSON), so the executor can plan the rest of the horizon
-- again when a device does not follow.
CREATE TABLE IF NOT EXISTS plans (
    plan_id        text    PRIMARY KEY,
    home_id        text    NOT NULL,
    status         text    NOT NULL CHECK (status IN ('proposed', 'active', 'replaced', 'done')),
    replaces       text,              -- the plan this one re-planned
    accepted_by    text    NOT NULL,
    accepted_at    timestamptz NOT NULL,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    slot_s         double precision NOT NULL,
    cost           double precision NOT NULL,
    baseline_cost  double precision NOT NULL,
    currency       text    NOT NULL,
    battery_device text,
    ev_device      text,
    problem        text    NOT NULL,  -- JSON, pipeline.energy.plan_commands.problem_to_json
    schedule       text    NOT NULL   -- JSON, one object per slot (shems plan --json's schedule)
);
CREATE INDEX IF NOT EXISTS plans_home ON plans (home_id, accepted_at);

CREATE TABLE IF NOT EXISTS plan_commands (
    command_id text    PRIMARY KEY,
    plan_id    text    NOT NULL,
    home_id    text    NOT NULL,
    device_id  text    NOT NULL,
    run_at     timestamptz NOT NULL,
    until_at   timestamptz NOT NULL,
    kind       text    NOT NULL CHECK (kind IN ('switch', 'battery', 'ev_limit')),
    state      text    NOT NULL CHECK (state IN ('on', 'off')),
    value_w    double precision,              -- the battery setpoint or EV limit
    expect_w   double precision NOT NULL,
    status     text    NOT NULL CHECK (status IN ('proposed', 'pending', 'sent', 'acknowledged', 'confirmed',
                                                  'not_followed', 'superseded')),
    sent_at    timestamptz,
    acked_at   timestamptz,
    checked_at timestamptz,
    measured_w double precision,
    message    text    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS plan_commands_due ON plan_commands (status, run_at);
CREATE INDEX IF NOT EXISTS plan_commands_plan ON plan_commands (plan_id, run_at);
