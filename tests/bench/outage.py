"""A long PostgreSQL outage under a running `shems run` (the test suite's 30-second outage, longer).

Starts a private PostgreSQL cluster on a free port (never the shared one), runs the real flow
against it WITHOUT --recovery-dir (or with, --recovery), publishes readings from 3 homes x 2
devices before, all through, and after an outage of --minutes (the cluster stopped with
``pg_ctl stop -m fast``), then compares what was published with what is stored. Prints one JSON
line: published, stored, lost, whether the flow exited during the outage, its exit code on
SIGTERM afterwards, and the store_write_retry/store_recovered log lines it wrote.

    .venv/bin/python -m tests.bench.outage --minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.test_store_outage import run_outage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the outage")
    parser.add_argument("--per-minute", type=int, default=60,
                        help="readings published per minute of outage")
    parser.add_argument("--recovery", action="store_true", help="run the flow with --recovery-dir")
    args = parser.parse_args(argv)
    outage_s = args.minutes * 60
    during = max(1, round(args.minutes * args.per_minute))
    with tempfile.TemporaryDirectory(prefix="shems-outage-") as tmp:
        extra = ["--recovery-dir", str(Path(tmp) / "recovery")] if args.recovery else []
        result = run_outage(f"mqtt://{MQTT_HOST}:{MQTT_PORT}", f"shems-bench/{uuid.uuid4().hex[:12]}/",
                            extra, outage_s, during, log=lambda m: print(m, file=sys.stderr, flush=True))
    result["recovery_dir"] = args.recovery
    print(json.dumps(result, default=str))
    ok = result["lost"] == 0 and result["exited_during_outage"] is None and result["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
