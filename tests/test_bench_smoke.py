"""The benchmark command runs end to end on a tiny fleet and ends with its JSON line.

This checks the tool works, not how fast anything is (benchmarks print numbers; see
tests/bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_ingest_prints_a_table_and_a_json_last_line():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "bench", "ingest", "--devices", "50", "--seconds", "2",
         "--rate", "500", "--burst", "1000", "--naive-burst", "300", "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("devices", "readings_per_s", "p50_ms", "p99_ms", "naive_readings_per_s", "raw_broker_per_s"):
        assert key in result
    assert result["devices"] == 50
    assert result["readings_per_s"] > 0 and result["naive_readings_per_s"] > 0 and result["raw_broker_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    # Lag over time (for soak runs): the 2-s paced phase is minute 0.
    assert [m["minute"] for m in result["latency_ms_by_minute"]] == [0]
    assert result["latency_ms_by_minute"][0]["p99"] == result["p99_ms"]
    assert "raw broker" in proc.stderr  # the table goes to stderr when --json keeps stdout for JSON


def _drain(*extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "bench", "drain", "--readings", "3000", "--devices", "60",
         "--json", *extra],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "counting subscriber" in proc.stderr  # progress on stderr, stdout keeps the JSON
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_drain_stores_every_queued_reading_and_ends_with_its_json_line():
    # The run fails (non-zero) unless the flow stored every one of the 3,000 queued readings and
    # the counting subscriber received every one.
    result = _drain("--no-insights", "--recovery")
    assert set(result) >= {"readings", "raw_drain_per_s", "shems_drain_per_s", "ratio", "insights", "processes"}
    assert result["readings"] == 3000 and result["insights"] is False and result["processes"] == 1
    assert result["stored"] == 3000 and result["mqtt_process"] is True and result["recovery"] is True
    assert result["raw_drain_per_s"] > 0 and result["shems_drain_per_s"] > 0
    assert result["ratio"] == round(result["shems_drain_per_s"] / result["raw_drain_per_s"], 3) or \
        abs(result["ratio"] - result["shems_drain_per_s"] / result["raw_drain_per_s"]) < 0.01


def test_bench_drain_with_insights_and_the_client_in_the_flows_process():
    result = _drain("--mqtt-in-process")
    assert result["insights"] is True and result["mqtt_process"] is False and result["recovery"] is False
    assert result["stored"] == 3000
    assert result["shems_drain_per_s"] > 0
