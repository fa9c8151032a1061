"""HTTP ingest: requests and readings per second through `shems http` (answered after the broker's
PUBACKs), one client sending in sequence, for batches of 1 and 100 readings.

    .venv/bin/python tests/bench/bench_http.py [--seconds 8] [--mqtt-url mqtt://127.0.0.1:1883]

Starts its own `shems http` (SQLite store in a temporary directory, a random topic prefix, rate
limit out of the way); no flow runs, so this is the service's own cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.test_http_ingest import Service  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{tmp}/bench.db"
        key = subprocess.run([sys.executable, "-m", "pipeline.cli", "apikey", "add", "bench",
                              "--store-url", store_url], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        service = Service(store_url, f"bench-http/{uuid.uuid4().hex[:8]}/", "--rate", "100000",
                          "--burst", "100000", mqtt_url=args.mqtt_url)
        try:
            url = f"{service.base}/api/v1/homes/bench/readings"
            for n in (1, 100):
                body = json.dumps([{"device_id": f"d{i}", "power_w": i} for i in range(n)]).encode()
                latencies: list[float] = []
                start = time.monotonic()
                while time.monotonic() - start < args.seconds:
                    t = time.monotonic()
                    request = urllib.request.Request(url, data=body, method="POST",
                                                     headers={"Authorization": f"Bearer {key}"})
                    with urllib.request.urlopen(request) as response:
                        response.read()
                        assert response.status == 200
                    latencies.append(time.monotonic() - t)
                elapsed = time.monotonic() - start
                latencies.sort()
                print(json.dumps({"batch": n, "requests_per_s": round(len(latencies) / elapsed, 1),
                                  "readings_per_s": round(len(latencies) * n / elapsed),
                                  "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                                  "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1)}))
        finally:
            service.stop()


if __name__ == "__main__":
    main()
