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
