"""The CLI's long commands report to Prometheus: `shems import` pushes its result to a real
Pushgateway (Debian's prometheus-pushgateway), `shems simulate` serves what it published."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.tools.broker import free_port
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def pushgateway(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure_tools.sh"), "pushgateway"], check=True,
                   timeout=600)
    port = free_port()
    proc = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _get(f"http://127.0.0.1:{port}/-/ready")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_import_pushes_its_result_to_the_pushgateway(pushgateway, sqlite_url):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "import", str(FIXTURES / "sgsc_3homes_2days.csv"),
         "--layout", "interval", "--ts-col", "reading_datetime", "--home-col", "customer_id",
         "--interval-kwh", "general_supply_kwh", "--tz", "Australia/Brisbane",
         "--store-url", sqlite_url, "--pushgateway", pushgateway],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = _get(f"http://{pushgateway}/metrics")
    assert re.search(r'shems_import_readings\{[^}]*job="shems_import"[^}]*\} 192', text)
    assert re.search(r'shems_import_success\{[^}]*job="shems_import"[^}]*\} 1', text)


def test_simulate_serves_what_it_published(mqtt_url, topic_prefix):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "simulate", "--homes", "2", "--interval", "0.5",
         "--duration", "30", "--mqtt-url", mqtt_url, "--topic-prefix", topic_prefix,
         "--metrics-port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        counts = []
        for _ in range(2):
            time.sleep(2.0)
            text = _get(f"http://127.0.0.1:{port}/metrics")
            counts.append(float(re.search(
                r'shems_published_readings_total\{command="simulate"\} (\S+)', text).group(1)))
        assert 0 < counts[0] < counts[1]  # moving while it runs
        assert re.search(r'shems_published_acked_total\{command="simulate"\} [1-9]', text)
    finally:
        proc.terminate()
        proc.wait(30)
