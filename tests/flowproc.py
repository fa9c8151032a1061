"""Run the real `shems run` flow as a subprocess, and publish to the real broker, for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FlowProcess:
    """A `shems run` child process; `started()` waits until it has subscribed."""

    mqtt_url: str
    store_url: str
    topic_prefix: str
    extra_args: list[str] = field(default_factory=list)
    client_id_prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:10]}")
    proc: subprocess.Popen | None = None
    log_lines: list[str] = field(default_factory=list)
    connections: int = 1  # MQTT clients to wait for: one per worker of this process
    _connected: threading.Event = field(default_factory=threading.Event)
    _seen: int = 0

    # Generous: with the suite on both cores beside other work, starting Python, Bytewax and the
    # client has been seen to take over a minute; a flow that never connects still fails.
    def start(self, idle_exit: float | None = None, timeout: float = 150.0,
              wait: bool = True) -> FlowProcess:
        cmd = [
            sys.executable, "-m", "pipeline.cli", "run",
            "--mqtt-url", self.mqtt_url,
            "--store-url", self.store_url,
            "--topic-prefix", self.topic_prefix,
            "--client-id-prefix", self.client_id_prefix,
            *self.extra_args,
        ]
        if idle_exit is not None:
            cmd += ["--idle-exit", str(idle_exit)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._connected.clear()
        self._seen = 0
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if wait:
            self.wait_connected(timeout)
        return self

    def wait_connected(self, timeout: float = 150.0) -> None:
        if not self._connected.wait(timeout):
            self.kill()
            raise RuntimeError("flow did not connect:\n" + "\n".join(self.log_lines[-40:]))

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.log_lines.append(line.rstrip())
            if "mqtt_subscribed" in line:
                self._seen += 1
                if self._seen >= self.connections:
                    self._connected.set()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: the flow drains, commits and exits."""
        assert self.proc
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 120.0) -> int:
        assert self.proc
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("flow did not exit:\n" + "\n".join(self.log_lines[-40:])) from None
        time.sleep(0.1)  # let the pump thread collect the last lines
        if rc != 0:
            raise RuntimeError(f"flow exited {rc}:\n" + "\n".join(self.log_lines[-60:]))
        return rc

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TestPublisher:
    """QoS 1 publisher that waits for every PUBACK."""

    __test__ = False  # not a pytest class

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.connect(host, port)
        self.client.loop_start()
        self.pending: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: str | bytes | dict) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.pending.append(self.client.publish(topic, payload, qos=1))

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self.pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("broker did not acknowledge a publish")
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.client.loop_stop()
        self.client.disconnect()


def broker_dropped(host: str = "127.0.0.1", port: int = 1883, timeout: float = 15.0) -> int:
    """Mosquitto's count of QoS>0 messages dropped for full client queues ($SYS, every 10 s)."""
    got: list[int] = []
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda client, userdata, m: got.append(int(m.payload))
    c.connect(host, port)
    c.subscribe("$SYS/broker/publish/messages/dropped")
    c.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return got[0] if got else -1
