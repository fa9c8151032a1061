"""The broker goes away mid-stream and comes back: the flow reconnects by itself (paho's backoff),
resumes its persistent session, and every reading is stored once.

Uses a private Mosquitto on a free port (with persistence, like a production broker) so the
machine's own broker is never stopped; it is started again within the test."""

from __future__ import annotations

import getpass
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.tools.broker import find_mosquitto, free_port, reachable
from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher


def _start(conf, port):
    proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if reachable("127.0.0.1", port, 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto binary not installed")
def test_flow_reconnects_after_the_broker_restarts(tmp_path, sqlite_url):
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {tmp_path}/\nautosave_interval 1\n"
                    # as root, mosquitto would switch to a user that cannot write tmp_path
                    f"user {getpass.getuser()}\n")
    broker = _start(conf, port)
    flow = None
    try:
        flow = FlowProcess(f"mqtt://127.0.0.1:{port}", sqlite_url, "").start(idle_exit=8)
        start = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
        readings = [(f"shems/h1/d{i % 3}/reading", {"ts": (start + timedelta(seconds=i)).isoformat(), "power_w": i})
                    for i in range(300)]
        pub = TestPublisher(port=port)
        for topic, body in readings[:150]:
            pub.publish(topic, body)
        pub.close()
        time.sleep(1.0)  # committed before the broker goes away
        broker.terminate()  # a clean broker shutdown saves its persistence file
        broker.wait(10)
        time.sleep(2.0)  # the flow notices and starts its reconnect backoff
        broker = _start(conf, port)
        pub = TestPublisher(port=port)
        for topic, body in readings[150:]:
            pub.publish(topic, body)
        pub.close()
        flow.wait(120)
        assert any("mqtt_disconnected" in line for line in flow.log_lines)
        assert sum("mqtt_connected" in line for line in flow.log_lines) >= 2
        store = open_store(sqlite_url)
        try:
            assert store.counts()["readings"] == 300
        finally:
            store.close()
    finally:
        if flow:
            flow.kill()
        broker.kill()
