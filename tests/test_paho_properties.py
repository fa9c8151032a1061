"""The receivers' cheaper MQTT 5 property decoding (flows/paho_properties.py) decodes what paho
does: on generated property sets, and end to end through the real broker."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from flows.paho_properties import SharedTablesProperties, share_property_tables

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@st.composite
def publish_properties(draw) -> Properties:
    """A PUBLISH's properties, any subset of those a broker may send on."""
    props = Properties(PacketTypes.PUBLISH)
    if draw(st.booleans()):
        props.PayloadFormatIndicator = draw(st.integers(0, 1))
    if draw(st.booleans()):
        props.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        props.ContentType = draw(_TEXT)
    if draw(st.booleans()):
        props.ResponseTopic = draw(_TEXT)
    if draw(st.booleans()):
        props.CorrelationData = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        props.TopicAlias = draw(st.integers(1, 65535))
    for _ in range(draw(st.integers(0, 3))):
        props.UserProperty = (draw(_TEXT), draw(_TEXT))
    for _ in range(draw(st.integers(0, 2))):
        props.SubscriptionIdentifier = draw(st.integers(1, 268435455))
    return props


def _decoded(cls: type[Properties], buffer: bytes) -> tuple[dict, int]:
    props, length = cls(PacketTypes.PUBLISH).unpack(buffer)
    return {k: v for k, v in props.__dict__.items() if k not in ("types", "names", "properties")}, length


@settings(max_examples=300, deadline=None)
@given(publish_properties(), st.binary(max_size=20))
def test_decodes_what_paho_decodes(props: Properties, payload: bytes) -> None:
    buffer = bytes(props.pack()) + payload  # the payload follows the properties in a PUBLISH
    assert _decoded(SharedTablesProperties, buffer) == _decoded(Properties, buffer)


def test_a_reused_object_is_cleared_as_paho_clears_it() -> None:
    used = SharedTablesProperties(PacketTypes.PUBLISH)
    used.ContentType = "text/plain"
    props, length = used.unpack(b"\x00payload")
    assert length == 1 and not hasattr(props, "ContentType")


def test_tables_are_shared_not_rebuilt() -> None:
    a, b = SharedTablesProperties(PacketTypes.PUBLISH), SharedTablesProperties(PacketTypes.CONNACK)
    assert a.names is b.names and a.properties is b.properties
    assert b.packetType == PacketTypes.CONNACK


def test_installed_decoder_receives_properties_through_the_broker(mqtt_url: str, topic_prefix: str) -> None:
    share_property_tables()
    share_property_tables()  # idempotent
    assert paho_packet.Properties is SharedTablesProperties
    received: list[mqtt.MQTTMessage] = []
    done = threading.Event()

    def on_message(client, userdata, message) -> None:
        received.append(message)
        if len(received) == 2:
            done.set()

    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"props-sub-{uuid.uuid4().hex[:8]}",
                      protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", int(mqtt_url.rsplit(":", 1)[1]))
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"props-pub-{uuid.uuid4().hex[:8]}",
                      protocol=mqtt.MQTTv5)
    try:
        sub.subscribe(topic_prefix + "#", qos=1)
        assert subscribed.wait(10)
        pub.connect("127.0.0.1", int(mqtt_url.rsplit(":", 1)[1]))
        pub.loop_start()
        with_props = Properties(PacketTypes.PUBLISH)
        with_props.ContentType = "application/json"
        with_props.UserProperty = ("site", "kitchen")
        pub.publish(topic_prefix + "a", b'{"power_w": 1}', qos=1, properties=with_props).wait_for_publish(10)
        pub.publish(topic_prefix + "b", b'{"power_w": 2}', qos=1).wait_for_publish(10)
        assert done.wait(10)
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
    by_topic = {m.topic: m for m in received}
    a, b = by_topic[topic_prefix + "a"], by_topic[topic_prefix + "b"]
    assert isinstance(a.properties, SharedTablesProperties)
    assert a.properties.ContentType == "application/json"
    assert a.properties.UserProperty == [("site", "kitchen")]
    assert a.payload == b'{"power_w": 1}' and b.payload == b'{"power_w": 2}'
    assert not hasattr(b.properties, "ContentType") and not hasattr(b.properties, "UserProperty")
