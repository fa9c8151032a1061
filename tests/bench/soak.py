"""Fleet soak: many simulated homes at a realistic interval for a long time, with insights.

Runs the real flow (`shems run --recovery-dir`, insights on, a fresh store) and the simulator
(`shems simulate --homes N --interval S`) against the broker, and once a minute prints the flow's
end-to-end lag (event time to commit: p50/p99 over that minute, from the flow's Prometheus
histogram), its memory (RSS of the flow's processes), the recovery directory's size (the snapshot
bytes on disk), the messages received and the rows stored. Lag, memory and snapshot size must be
flat after warm-up; the last line is one JSON object with the per-minute rows.

    .venv/bin/python -m tests.bench.soak --homes 10000 --interval 60 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """Metric samples summed over label sets (workers), keyed by name and `le`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r'([a-zA-Z_:]+)(\{[^}]*\})?\s+(\S+)', line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        le = re.search(r'le="([^"]+)"', labels)
        key = f"{name}@{le.group(1)}" if le else name
        out[key] = out.get(key, 0.0) + value
    return out


def quantile(delta: dict[float, float], q: float) -> float | None:
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in LAG_BUCKETS:
        if delta.get(bound, 0.0) >= q * total:
            return bound
    return float("inf")


def lag_buckets(sample: dict[str, float]) -> dict[float, float]:
    out = {}
    for bound in LAG_BUCKETS:
        key = "+Inf" if bound == float("inf") else repr(float(bound)) if bound < 1 else f"{bound:.1f}"
        out[bound] = sample.get(f"shems_end_to_end_lag_seconds_bucket@{key}", 0.0)
    return out


def rss_bytes(pid: int) -> int:
    """RSS of a process and its children (Bytewax may start worker processes)."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homes", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between a device's readings")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--store-url", default=None, help="default: a fresh PostgreSQL database")
    parser.add_argument("--no-insights", action="store_true")
    args = parser.parse_args(argv)

    import psycopg

    db = None
    store_url = args.store_url
    if store_url is None:
        db = f"shems_soak_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db}"')
        parts = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
        store_url = f"postgresql://{parts.get('user', 'postgres')}@{parts['host']}:{parts['port']}/{db}"
    prefix = f"soak-{uuid.uuid4().hex[:8]}/"
    mqtt = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
    metrics_port = free_port()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shems-soak-") as tmp:
        recovery = Path(tmp) / "recovery"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        flow = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "--mqtt-url", mqtt, "--store-url", store_url,
             "--topic-prefix", prefix, "--client-id-prefix", f"soak-{uuid.uuid4().hex[:6]}",
             "--recovery-dir", str(recovery), "--metrics-port", str(metrics_port)]
            + (["--no-insights"] if args.no_insights else []),
            cwd=ROOT, env=env, stdout=open(Path(tmp) / "flow.log", "w"), stderr=subprocess.STDOUT)
        time.sleep(8)
        sim = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "simulate", "--mqtt-url", mqtt, "--topic-prefix", prefix,
             "--homes", str(args.homes), "--interval", str(args.interval), "--duration", str(args.minutes * 60)],
            cwd=ROOT, env=env, stdout=open(Path(tmp) / "sim.log", "w"), stderr=subprocess.STDOUT)
        previous = None
        try:
            started = time.time()
            minute = 0
            print(f"{'min':>4} {'received':>10} {'/s':>7} {'lag p50':>8} {'lag p99':>8} {'RSS MB':>8} "
                  f"{'snapshot MB':>12}", file=sys.stderr)
            while time.time() - started < args.minutes * 60 + 30:
                time.sleep(max(0.0, started + (minute + 1) * 60 - time.time()))
                minute += 1
                if flow.poll() is not None:
                    print("the flow exited: see its log", file=sys.stderr)
                    print((Path(tmp) / "flow.log").read_text()[-3000:], file=sys.stderr)
                    return 1
                sample = scrape(metrics_port)
                buckets = lag_buckets(sample)
                delta = buckets if previous is None else {b: buckets[b] - previous[0][b] for b in buckets}
                received = sample.get("shems_messages_received_total", 0.0)
                rate = (received - (previous[1] if previous else 0.0)) / 60
                row = {"minute": minute, "received": int(received), "per_s": round(rate, 1),
                       "lag_p50_s": quantile(delta, 0.5), "lag_p99_s": quantile(delta, 0.99),
                       "rss_mb": round(rss_bytes(flow.pid) / 1e6, 1),
                       "snapshot_mb": round(dir_bytes(recovery) / 1e6, 2) if recovery.exists() else 0.0}
                rows.append(row)
                previous = (buckets, received)
                print(f"{minute:>4} {row['received']:>10,} {row['per_s']:>7} {row['lag_p50_s']!s:>8} "
                      f"{row['lag_p99_s']!s:>8} {row['rss_mb']:>8} {row['snapshot_mb']:>12}", file=sys.stderr)
        finally:
            sim.terminate()
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(60)
            except subprocess.TimeoutExpired:
                flow.kill()
            sim.wait(30)
    if db:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(json.dumps({"homes": args.homes, "interval_s": args.interval, "minutes": args.minutes,
                      "insights": not args.no_insights, "per_minute": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
