"""``shems bench state`` runs end to end on a small fleet and ends with its JSON line (how big or
fast the state is: tests/test_insights_state.py and tests/bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_state_prints_a_table_and_a_json_last_line():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "bench", "state", "--homes", "2", "--days", "2",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["homes"] == 2 and result["days"] == 2
    assert 1_000 < result["bytes_per_home_snapshot"] < 40_000
    assert result["bytes_per_home_memory"] > result["bytes_per_home_snapshot"]
    assert result["us_per_window"] > 0 and result["us_per_snapshot"] > 0 and result["us_per_hourly_snapshot"] > 0
    # An epoch rewrites the insights state only; the forecasts state waits for an hour to close.
    assert 1_000 < result["bytes_per_home_epoch"] < result["bytes_per_home_snapshot"]
    assert "snapshot per home" in proc.stderr  # the table goes to stderr with --json


def test_bench_state_rejects_a_bad_argument_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "bench", "state", "--homes", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--homes" in proc.stderr.strip().splitlines()[-1], proc.stderr  # argparse: usage, then the error
