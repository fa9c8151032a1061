"""A thin QoS 1 publisher (paho-mqtt 2.x, MQTT 5) shared by replay, simulate, demo and bench."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from pipeline.config import parse_mqtt_url
from pipeline.records import Reading


def native_topic(reading: Reading, topic_prefix: str = "") -> str:
    return f"{topic_prefix}shems/{reading.home_id}/{reading.device_id}/reading"


def native_payload(reading: Reading) -> bytes:
    body: dict[str, object] = {
        "ts": reading.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "power_w": reading.power_w,
        "kind": reading.kind.value,
    }
    for name in ("energy_wh", "voltage_v", "current_a"):
        value = getattr(reading, name)
        if value is not None:
            body[name] = value
    return json.dumps(body, separators=(",", ":")).encode()


class Publisher:
    """Publishes and counts broker acknowledgements, so callers can wait until all are safe."""

    def __init__(self, url: str, qos: int = 1, client_id: str = "", max_inflight: int = 1000) -> None:
        endpoint = parse_mqtt_url(url)
        self.qos = qos
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=mqtt.MQTTv5)
        endpoint.configure(self.client)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 30)
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.client.on_publish = self._on_publish
        self._subscriptions: dict[str, int] = {}  # topic filter -> QoS, renewed on every connect
        # SUBACK bookkeeping under its own lock, never held while calling paho (paho runs our
        # callbacks with its own locks held).
        self._sub_lock = threading.Lock()
        self._suback_waiting: dict[int, threading.Event] = {}
        self._suback_early: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        # The session is not persistent: after a reconnect the broker has forgotten our filters.
        for topic_filter, qos in list(self._subscriptions.items()):
            client.subscribe(topic_filter, qos=qos)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._sub_lock:
            event = self._suback_waiting.pop(mid, None)
            if event is None:
                self._suback_early.add(mid)
        if event is not None:
            event.set()

    def subscribe(self, topic_filter: str, on_message: Callable[[mqtt.MQTTMessage], None],
                  qos: int = 1, timeout: float = 10.0) -> None:
        """Receive messages on this client too; returns once the broker confirmed (SUBACK), so
        a message published after this call is routed to us."""
        self.client.message_callback_add(topic_filter, lambda client, userdata, msg: on_message(msg))
        result, mid = self.client.subscribe(topic_filter, qos=qos)
        self._subscriptions[topic_filter] = qos
        if mid is None:  # paho gives no message id when the request was not sent
            raise TimeoutError(f"the broker did not confirm the subscription to {topic_filter!r}")
        event = threading.Event()
        with self._sub_lock:
            if mid in self._suback_early:  # the SUBACK beat us here
                self._suback_early.discard(mid)
                event.set()
            else:
                self._suback_waiting[mid] = event
        if result != mqtt.MQTT_ERR_SUCCESS or not event.wait(timeout):
            raise TimeoutError(f"the broker did not confirm the subscription to {topic_filter!r}")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acked += 1

    # MQTT packet ids are 16 bit: a publisher more than 65,535 messages ahead of the broker's
    # acknowledgements would reuse ids still in flight and paho would silently drop messages.
    MAX_PENDING = 50_000

    def publish_raw(self, topic: str, payload: bytes | str) -> None:
        if self.qos and self.sent - self.acked >= self.MAX_PENDING:
            while self.sent - self.acked >= self.MAX_PENDING // 2:
                time.sleep(0.005)
        with self._lock:  # replay and simulator threads may share one publisher
            self.sent += 1
        self.client.publish(topic, payload, qos=self.qos)

    def publish_nowait(self, topic: str, payload: bytes | str) -> None:
        """Publish without the backpressure wait: for paho's own callback thread, which is the
        thread that would have to process the acknowledgements being waited for."""
        with self._lock:
            self.sent += 1
        self.client.publish(topic, payload, qos=self.qos)

    def publish_reading(self, reading: Reading, topic_prefix: str = "") -> None:
        self.publish_raw(native_topic(reading, topic_prefix), native_payload(reading))

    def pending(self) -> int:
        return self.sent - self.acked

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the broker acknowledged everything published (QoS 1 and 2)."""
        if self.qos == 0:
            return
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pending()} publishes not acknowledged after {timeout} s")
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.client.loop_stop()
            self.client.disconnect()
