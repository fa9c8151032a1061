"""deploy/mosquitto: the real Mosquitto loads our configuration; authentication and the per-home
ACLs do what they say; the $SYS dropped-message counter the flow exports exists."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pipeline.broker import find_mosquitto, free_port, reachable

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"


@pytest.fixture
def broker(tmp_path):
    if find_mosquitto() is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed")
    port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "shems-ingest", "ingest-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "shems-viewer", "viewer-secret"], check=True)
    for home in ("home-1", "home-2"):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), home, f"{home}-secret"], check=True)
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = (conf.replace("listener 1883", f"listener {port} 127.0.0.1")
                .replace("/mosquitto/config/", f"{tmp_path}/")
                .replace("/mosquitto/data/", f"{tmp_path}/")
                .replace("sys_interval 10", "sys_interval 1"))
    # Started as root, mosquitto would switch to the mosquitto user, who cannot read tmp_path.
    conf += f"\nuser {getpass.getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([find_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    for _ in range(100):
        if reachable("127.0.0.1", port, 0.2):
            break
        if proc.poll() is not None:
            pytest.fail("mosquitto refused the configuration: " + (tmp_path / "log.txt").read_text())
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def _client(port, user=None, password=None):
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    result = {}
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    connected.wait(5)
    return c, result.get("rc")


def _listening(port, user, password, topic, qos=1):
    """A signed-in client subscribed to ``topic`` (SUBACK received); what it gets, as (topic, payload)."""
    got, subscribed = [], threading.Event()
    client, rc = _client(port, user, password)
    assert rc is not None and not rc.is_failure
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(topic, qos=qos)
    assert subscribed.wait(5)
    return client, got


def test_anonymous_clients_are_refused(broker):
    c, rc = _client(broker)
    c.loop_stop()
    assert rc is not None and rc.is_failure


def test_a_home_reaches_the_pipeline_only_under_its_own_topic(broker):
    ingest, got = _listening(broker, "shems-ingest", "ingest-secret", "$share/shems/shems/+/+/reading")
    home, rc = _client(broker, "home-1", "home-1-secret")
    assert not rc.is_failure
    home.publish("shems/home-1/fridge/reading", b'{"power_w": 90}', qos=1).wait_for_publish(5)
    home.publish("shems/home-2/fridge/reading", b'{"power_w": 666}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert got == [("shems/home-1/fridge/reading", b'{"power_w": 90}')]
    for c in (home, ingest):
        c.loop_stop()


def test_the_viewer_sends_commands_but_reads_no_readings(broker):
    home, commands = _listening(broker, "home-1", "home-1-secret", "shems/home-1/+/set")
    viewer, readings = _listening(broker, "shems-viewer", "viewer-secret", "shems/+/+/reading")
    viewer.publish("shems/home-1/plug/set", b'{"state": "off"}', qos=1).wait_for_publish(5)
    home.publish("shems/home-1/plug/reading", b'{"power_w": 3}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert commands == [("shems/home-1/plug/set", b'{"state": "off"}')]
    assert readings == []  # Mosquitto grants the subscription but delivers nothing the ACL denies
    for c in (home, viewer):
        c.loop_stop()


def test_the_dropped_message_counter_the_flow_exports_exists(broker):
    ingest, values = _listening(broker, "shems-ingest", "ingest-secret", "$SYS/broker/publish/messages/dropped", qos=0)
    deadline = time.monotonic() + 5
    while not values and time.monotonic() < deadline:
        time.sleep(0.1)
    ingest.loop_stop()
    assert values and values[0][1].decode().isdigit()
