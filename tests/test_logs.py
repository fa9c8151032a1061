"""Logs are structured JSON and never carry a secret, even when URLs hold passwords."""

from __future__ import annotations

import json

from tests.flowproc import FlowProcess


def test_passwords_in_urls_never_reach_the_logs(pg_url, topic_prefix):
    secret_pg = pg_url.replace("postgres@", "postgres:pg-s3cret-pw@")
    flow = FlowProcess("mqtt://someone:mqtt-s3cret-pw@127.0.0.1:1883", secret_pg, topic_prefix).start(idle_exit=2)
    flow.wait()
    text = "\n".join(flow.log_lines)
    assert "s3cret" not in text
    events = [json.loads(line) for line in flow.log_lines if line.startswith("{")]
    starting = next(e for e in events if e["event"] == "flow_starting")
    assert starting["mqtt"] == "mqtt://someone:***@127.0.0.1:1883"
    assert ":***@" in starting["store"]
    assert {"level", "timestamp", "event"} <= set(starting)
