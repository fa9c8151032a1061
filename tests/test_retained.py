"""A retained message is a device's last state, which the broker replays to whoever subscribes;
the flow takes live messages only (flows/mqtt_source.py subscribes with retainHandling=2), so a
stale state is never read as a measurement stamped with its arrival time. Real Mosquitto, real
`shems run`."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt

from sinks.stores import open_store
from tests.flowproc import FlowProcess, TestPublisher


def _retain(topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-retain-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_retained_state_is_not_read_as_a_new_reading(sqlite_url, mqtt_url, topic_prefix):
    stale = f"{topic_prefix}shems/ret-home/plug/reading"
    _retain(stale, json.dumps({"power_w": 120.0}).encode())  # no time stamp of its own
    try:
        flow = FlowProcess(mqtt_url, sqlite_url, topic_prefix, extra_args=["--no-insights"])
        flow.start()
        ts = datetime.now(timezone.utc) - timedelta(seconds=30)
        pub = TestPublisher()
        pub.publish(f"{topic_prefix}shems/ret-home/meter/reading", {"ts": ts.isoformat(), "power_w": 5.0})
        pub.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            store = open_store(sqlite_url)
            try:
                readings = store.readings()
            finally:
                store.close()
            if readings:
                break
            time.sleep(0.5)
        time.sleep(2)  # a retained replay would have come before the live message
        flow.stop()
        store = open_store(sqlite_url)
        try:
            readings = store.readings()
        finally:
            store.close()
        assert [(r.device_id, r.power_w) for r in readings] == [("meter", 5.0)]
    finally:
        _retain(stale, b"")  # an empty retained message clears it on the shared broker
