"""`shems bench ingest`: end-to-end ingest rate and latency against a real broker and store, with
two baselines measured in the same run and at the same QoS:

* raw broker rate: a paho subscriber that only counts (the ceiling for any MQTT consumer here);
* naive: a paho subscriber that INSERTs and commits every message into PostgreSQL;
* shems: the real flow (`shems run` processes), from the first publish to the last committed row.

Then a paced phase at ``--rate`` readings/s measures publish-to-visible latency (p50/p99) and
samples the flow's memory. Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from rich.console import Console
from rich.table import Table

from pipeline.config import parse_mqtt_url
from pipeline.tools.broker import free_port, start_private_broker
from pipeline.tools.publisher import Publisher

ADMIN_URL = os.environ.get("SHEMS_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BenchResult:
    devices: int
    readings_per_s: float
    p50_ms: float
    p99_ms: float
    naive_readings_per_s: float
    raw_broker_per_s: float
    burst_messages: int
    rate_target: float
    rate_achieved: float
    rss_mb_start: float
    rss_mb_end: float
    rss_mb_max: float
    rss_mb_per_min: float
    workers: int
    processes: int
    qos: int
    rss_by_minute: list[float] = field(default_factory=list)
    # (minute of the paced phase, p50 ms, p99 ms): lag over time, for soak runs
    lag_by_minute: list[tuple[int, float, float]] = field(default_factory=list)
    insights: bool = True  # the flow ran its forecasts, anomaly detectors and recommender


def _payloads(prefix: str, devices: int, count: int, start: datetime) -> list[tuple[str, bytes]]:
    """``count`` native readings spread over ``devices`` devices (5 per home), each unique."""
    out = []
    for i in range(count):
        device = i % devices
        ts = start + timedelta(seconds=(i // devices) * 10)
        body = {"ts": ts.isoformat(timespec="milliseconds"), "power_w": float(i % 3000)}
        out.append((f"{prefix}shems/h{device // 5}/d{device}/reading", json.dumps(body).encode()))
    return out


def _subscriber(url: str, topic: str, qos: int, on_message) -> mqtt.Client:
    ep = parse_mqtt_url(url)
    ready = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.connect(ep.host, ep.port)
    client.subscribe(topic, qos=qos)
    client.loop_start()
    if not ready.wait(10):
        raise RuntimeError("benchmark subscriber could not subscribe")
    return client


def _publish_all(publisher: Publisher, messages: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    for topic, payload in messages:
        publisher.publish_raw(topic, payload)
    return started


def _subscriber_rate(url: str, qos: int, messages: list[tuple[str, bytes]], handle, what: str,
                     timeout: float) -> float:
    """Publish ``messages`` as fast as possible; a paho subscriber runs ``handle`` on each.
    Returns messages per second from the first publish to the last one handled."""
    total = len(messages)
    handled = 0
    done = threading.Event()
    last = [0.0]

    def on_message(client, userdata, message):
        nonlocal handled
        handle(message)
        handled += 1
        if handled == total:
            last[0] = time.perf_counter()
            done.set()

    sub = _subscriber(url, messages[0][0].split("shems/")[0] + "shems/#", qos, on_message)
    publisher = Publisher(url, qos=qos)
    started = _publish_all(publisher, messages)
    done.wait(timeout)
    publisher.close()
    sub.loop_stop()
    sub.disconnect()
    if handled < total:
        raise RuntimeError(f"{what} subscriber handled {handled} of {total} messages")
    return total / (last[0] - started)


def measure_raw(url: str, qos: int, messages: list[tuple[str, bytes]]) -> float:
    return _subscriber_rate(url, qos, messages, lambda message: None, "raw", 300)


def measure_naive(url: str, qos: int, store_url: str, messages: list[tuple[str, bytes]]) -> float:
    conn = psycopg.connect(store_url)
    conn.execute("CREATE TABLE IF NOT EXISTS naive_readings (home_id text, device_id text, ts timestamptz, "
                 "power_w double precision, PRIMARY KEY (home_id, device_id, ts))")
    conn.commit()

    def insert(message):
        _, home, device, _ = message.topic.rsplit("/", 3)
        body = json.loads(message.payload)
        conn.execute("INSERT INTO naive_readings VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (home, device, body["ts"], body["power_w"]))
        conn.commit()

    try:
        return _subscriber_rate(url, qos, messages, insert, "naive", 600)
    finally:
        conn.close()


class Flow:
    """One or more `shems run` processes forming one Bytewax cluster."""

    def __init__(self, mqtt_url: str, store_url: str, prefix: str, workers: int, processes: int, qos: int,
                 insights: bool = True, client_prefix: str | None = None, wait: bool = True,
                 extra_args: tuple[str, ...] = ()):
        self.procs: list[subprocess.Popen] = []
        client_prefix = client_prefix or f"bench-{uuid.uuid4().hex[:8]}"
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        self.logs = []
        for i in range(processes):
            cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mqtt-url", mqtt_url, "--store-url", store_url,
                   "--topic-prefix", prefix, "--client-id-prefix", client_prefix, "-w", str(workers),
                   "--qos", str(qos)]
            if processes > 1:
                cmd += ["-i", str(i), "-a", addresses]
            if not insights:
                cmd.append("--no-insights")
            cmd += extra_args
            log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{client_prefix}-{i}.log", "w")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                               env=dict(os.environ, PYTHONUNBUFFERED="1")))
        if wait:
            self._wait_connected(workers * processes)

    def _wait_connected(self, clients: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = "".join(Path(log.name).read_text() for log in self.logs)
            if text.count("mqtt_subscribed") >= clients:
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the flow did not start: " + "".join(Path(l.name).read_text()[-2000:] for l in self.logs))

    def rss_mb(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except FileNotFoundError:
                pass
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()


def _count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None  # count(*) always returns a row
    return row[0]


def measure_shems(flow_url: str, store_url: str, qos: int, prefix: str, messages, devices: int,
                  seconds: float, rate: float, workers: int, processes: int, console: Console,
                  insights: bool = True, flow_args: tuple[str, ...] = ()):
    flow = Flow(flow_url, store_url, prefix, workers, processes, qos, insights, extra_args=flow_args)
    poll = psycopg.connect(store_url, autocommit=True)
    try:
        publisher = Publisher(flow_url, qos=qos)
        started = _publish_all(publisher, messages)
        total = len(messages)
        deadline = time.monotonic() + 600
        while _count(poll) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow stored {_count(poll)} of {total} readings in 600 s")
            time.sleep(0.02)
        throughput = total / (time.perf_counter() - started)
        console.print(f"shems burst: {total:,} readings in {total / throughput:.1f} s")

        # Paced phase: each reading's ts is its publish time; latency = first poll that sees it.
        n = int(seconds * rate)
        publish_times: list[float] = []
        seen: list[tuple[float, int]] = []
        stop = threading.Event()
        rss: list[tuple[float, float]] = []

        def poller():
            conn = psycopg.connect(store_url, autocommit=True)
            next_rss = 0.0
            while not stop.is_set():
                now = time.perf_counter()
                seen.append((now, _count(conn) - total))
                if now >= next_rss:
                    rss.append((now, flow.rss_mb()))
                    next_rss = now + 2.0
                time.sleep(0.02)
            conn.close()

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        phase_start = time.perf_counter()
        chunk = max(1, int(rate / 100))
        for i in range(n):
            if i % chunk == 0:
                target = phase_start + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            device = i % devices
            now = datetime.now(timezone.utc)
            body = json.dumps({"ts": now.isoformat(timespec="milliseconds"), "power_w": float(i % 2000)})
            publish_times.append(time.perf_counter())
            publisher.publish_raw(f"{prefix}shems/h{device // 5}/d{device}/reading", body)
        achieved = n / (time.perf_counter() - phase_start)
        deadline = time.monotonic() + 120
        while (not seen or seen[-1][1] < n) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join()
        publisher.close()
        latencies = []
        j = 0
        for k, published in enumerate(publish_times):
            while j < len(seen) and seen[j][1] < k + 1:
                j += 1
            if j == len(seen):
                break
            latencies.append((seen[j][0] - published) * 1000)
        if len(latencies) < n:
            raise RuntimeError(f"only {len(latencies)} of {n} paced readings became visible")
        lag_by_minute = _percentiles_by_minute(
            [(publish_times[k] - phase_start, lat) for k, lat in enumerate(latencies)])
        p50, p99 = _p50_p99(latencies)
        slope = 0.0
        if len(rss) >= 3:
            xs = [(t - rss[0][0]) / 60 for t, _ in rss]
            ys = [m for _, m in rss]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            denom = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / denom if denom else 0.0
        return throughput, p50, p99, achieved, rss, slope, lag_by_minute
    finally:
        poll.close()
        flow.stop()


def _percentiles_by_minute(samples: list[tuple[float, float]]) -> list[tuple[int, float, float]]:
    """(seconds into the phase, latency ms) -> (minute, p50, p99) per minute of the phase."""
    by_minute: dict[int, list[float]] = {}
    for at, lat in samples:
        by_minute.setdefault(int(at // 60), []).append(lat)
    return [(minute, *_rounded(_p50_p99(values))) for minute, values in sorted(by_minute.items())]


def _rounded(pair: tuple[float, float]) -> tuple[float, float]:
    return round(pair[0], 1), round(pair[1], 1)


def _p50_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run_bench(devices: int, seconds: float, rate: float, burst: int | None, qos: int, mqtt_url: str | None,
              store_url: str | None, workers: int, processes: int, naive_burst: int | None,
              console: Console, insights: bool = True, flow_args: tuple[str, ...] = ()) -> BenchResult:
    burst = burst or max(50_000, 5 * devices)
    naive_burst = naive_burst or min(burst, 20_000)
    broker = None
    if mqtt_url is None:
        broker = start_private_broker()
        mqtt_url = broker.url
    db_name = None
    if store_url is None:
        db_name = f"shems_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db_name}"')
        store_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + db_name
    run_id = uuid.uuid4().hex[:8]
    start = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)
    try:
        console.print(f"broker {mqtt_url}, store {store_url.split('@')[-1]}, QoS {qos}, "
                      f"{devices:,} devices, burst {burst:,}")
        raw = measure_raw(mqtt_url, qos, _payloads(f"bench-raw-{run_id}/", devices, burst, start))
        console.print(f"raw broker: {raw:,.0f} msg/s")
        naive = measure_naive(mqtt_url, qos, store_url, _payloads(f"bench-naive-{run_id}/", devices, naive_burst, start))
        console.print(f"naive INSERT+commit: {naive:,.0f} rows/s")
        prefix = f"bench-flow-{run_id}/"
        throughput, p50, p99, achieved, rss, slope, lag_by_minute = measure_shems(
            mqtt_url, store_url, qos, prefix, _payloads(prefix, devices, burst, start), devices, seconds, rate,
            workers, processes, console, insights, flow_args)
        by_minute = [round(m, 1) for t, m in rss if int((t - rss[0][0]) // 2) % 30 == 0]
        return BenchResult(devices, throughput, p50, p99, naive, raw, burst, rate, achieved,
                           rss[0][1] if rss else 0.0, rss[-1][1] if rss else 0.0,
                           max((m for _, m in rss), default=0.0), slope, workers, processes, qos,
                           by_minute, lag_by_minute, insights)
    finally:
        if broker:
            broker.stop()
        if db_name:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def print_result(result: BenchResult, console: Console, as_json: bool) -> None:
    table = Table(title=f"ingest benchmark: {result.devices:,} devices, QoS {result.qos}, "
                        f"{result.workers} worker(s) x {result.processes} process(es)"
                        f"{'' if result.insights else ', no insights'}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("vs raw broker", justify="right")
    table.add_column("vs naive", justify="right")
    r = result
    table.add_row("raw broker (count only), msg/s", f"{r.raw_broker_per_s:,.0f}", "1.00", "")
    table.add_row("naive INSERT+commit per message, rows/s", f"{r.naive_readings_per_s:,.0f}",
                  f"{r.naive_readings_per_s / r.raw_broker_per_s:.2f}", "1.00")
    table.add_row("shems publish -> committed, readings/s", f"{r.readings_per_s:,.0f}",
                  f"{r.readings_per_s / r.raw_broker_per_s:.2f}", f"{r.readings_per_s / r.naive_readings_per_s:.1f}x")
    table.add_row(f"latency p50 at {r.rate_achieved:,.0f}/s, ms", f"{r.p50_ms:,.0f}", "", "")
    table.add_row(f"latency p99 at {r.rate_achieved:,.0f}/s, ms", f"{r.p99_ms:,.0f}", "", "")
    table.add_row("flow RSS start / end / max, MB", f"{r.rss_mb_start:.0f} / {r.rss_mb_end:.0f} / {r.rss_mb_max:.0f}", "", "")
    table.add_row("flow RSS slope, MB/min", f"{r.rss_mb_per_min:+.2f}", "", "")
    console.print(table)
    if len(r.lag_by_minute) > 1:
        console.print("publish -> visible by minute of the paced phase (p50 / p99 ms): " + ", ".join(
            f"{m}: {p50:,.0f}/{p99:,.0f}" for m, p50, p99 in r.lag_by_minute))
    if as_json:
        out = {"devices": r.devices, "readings_per_s": round(r.readings_per_s, 1), "p50_ms": round(r.p50_ms, 1),
               "p99_ms": round(r.p99_ms, 1), "naive_readings_per_s": round(r.naive_readings_per_s, 1),
               "raw_broker_per_s": round(r.raw_broker_per_s, 1), "burst_messages": r.burst_messages,
               "rate_target": r.rate_target, "rate_achieved": round(r.rate_achieved, 1),
               "rss_mb_start": round(r.rss_mb_start, 1), "rss_mb_end": round(r.rss_mb_end, 1),
               "rss_mb_max": round(r.rss_mb_max, 1), "rss_mb_per_min": round(r.rss_mb_per_min, 3),
               "workers": r.workers, "processes": r.processes, "qos": r.qos, "insights": r.insights,
               "rss_mb_by_minute": r.rss_by_minute,
               "latency_ms_by_minute": [{"minute": m, "p50": a, "p99": b} for m, a, b in r.lag_by_minute]}
        print(json.dumps(out), flush=True)
