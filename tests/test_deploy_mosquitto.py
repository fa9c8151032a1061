"""deploy/mosquitto: the real Mosquitto loads our configuration; authentication and the per-home
ACLs do what they say; no account can take another's client id (the flow's session); service
accounts have no home topics; the TLS listeners work; the $SYS dropped-message counter the flow
exports exists."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pipeline.config import parse_mqtt_url
from pipeline.records import RawMessage
from pipeline.tools.broker import find_mosquitto, free_port, reachable
from tests.tlscerts import TestCA

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"


@dataclass
class DeployBroker:
    """The deploy configuration running on free loopback ports."""

    homes: int  # 1883
    homes_tls: int  # 8883
    services: int  # 1884
    services_tls: int  # 8884
    ca: Path
    log: Path


def start_deploy_broker(tmp_path: Path, edit=lambda conf: conf) -> tuple[DeployBroker, subprocess.Popen]:
    if find_mosquitto() is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto / mosquitto_passwd not installed (scripts/ensure_services.sh installs them)")
    passwd, services = tmp_path / "passwd", tmp_path / "services.passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(services), "shems-ingest", "ingest-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(services), "shems-viewer", "viewer-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(services), "shems-http", "http-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "home-1", "home-1-secret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "home-2", "home-2-secret"], check=True)
    for name in ("acl", "services.acl"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    ca = TestCA(tmp_path / "certs")
    issued = ca.issue("broker", hosts=("localhost", "127.0.0.1"))
    ports = {deploy_port: free_port() for deploy_port in (1883, 8883, 1884, 8884)}
    conf = (DEPLOY / "mosquitto.conf").read_text()
    for deploy_port, port in ports.items():
        conf = conf.replace(f"listener {deploy_port}\n", f"listener {port} 127.0.0.1\n")
    conf = (conf.replace("/mosquitto/config/", f"{tmp_path}/")
                .replace("/mosquitto/data/", f"{tmp_path}/")
                .replace("/mosquitto/certs/broker.crt", str(issued.cert))
                .replace("/mosquitto/certs/broker.key", str(issued.key))
                .replace("sys_interval 10", "sys_interval 1"))
    # Started as root, mosquitto would switch to the mosquitto user, who cannot read tmp_path.
    conf = edit(conf) + f"\nuser {getpass.getuser()}\nlog_dest file {tmp_path}/log.txt\nlog_type all\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([find_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if all(reachable("127.0.0.1", p, 0.2) for p in ports.values()):
            break
        if proc.poll() is not None:
            pytest.fail("mosquitto refused the configuration: " + proc.stderr.read())
        time.sleep(0.05)
    return DeployBroker(ports[1883], ports[8883], ports[1884], ports[8884], ca.cert_path,
                        tmp_path / "log.txt"), proc


@pytest.fixture
def broker(tmp_path):
    deploy, proc = start_deploy_broker(tmp_path)
    yield deploy
    proc.terminate()
    proc.wait(10)


def _client(port, user=None, password=None, client_id="", clean_start=True):
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                    client_id=client_id)
    if user:
        c.username_pw_set(user, password)
    result = {}
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, clean_start=clean_start)
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
    for port in (broker.homes, broker.services):
        c, rc = _client(port)
        c.loop_stop()
        assert rc is not None and rc.is_failure


def test_a_home_reaches_the_pipeline_only_under_its_own_topic(broker):
    ingest, got = _listening(broker.services, "shems-ingest", "ingest-secret", "$share/shems/shems/+/+/reading")
    home, rc = _client(broker.homes, "home-1", "home-1-secret")
    assert not rc.is_failure
    home.publish("shems/home-1/fridge/reading", b'{"power_w": 90}', qos=1).wait_for_publish(5)
    home.publish("shems/home-2/fridge/reading", b'{"power_w": 666}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert got == [("shems/home-1/fridge/reading", b'{"power_w": 90}')]
    for c in (home, ingest):
        c.loop_stop()


def test_the_viewer_sends_commands_but_reads_no_readings(broker):
    home, commands = _listening(broker.homes, "home-1", "home-1-secret", "shems/home-1/+/set")
    viewer, readings = _listening(broker.services, "shems-viewer", "viewer-secret", "shems/+/+/reading")
    viewer.publish("shems/home-1/plug/set", b'{"state": "off"}', qos=1).wait_for_publish(5)
    home.publish("shems/home-1/plug/reading", b'{"power_w": 3}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert commands == [("shems/home-1/plug/set", b'{"state": "off"}')]
    assert readings == []  # Mosquitto grants the subscription but delivers nothing the ACL denies
    for c in (home, viewer):
        c.loop_stop()


def test_the_dropped_message_counter_the_flow_exports_exists(broker):
    ingest, values = _listening(broker.services, "shems-ingest", "ingest-secret", "$SYS/broker/publish/messages/dropped", qos=0)
    deadline = time.monotonic() + 5
    while not values and time.monotonic() < deadline:
        time.sleep(0.1)
    ingest.loop_stop()
    assert values and values[0][1].decode().isdigit()


# ---- identity: client ids bound to accounts ----

def _flow_source(port: int, prefix: str = "shems-flow", tls_ca: Path | None = None):
    """The flow's own MQTT source (worker 0, client id ``<prefix>-0``), as `shems run` builds it."""
    from flows.mqtt_source import MqttPartition, MqttSource

    scheme, query = ("mqtts", f"?ca_file={tls_ca}") if tls_ca else ("mqtt", "")
    host = "localhost" if tls_ca else "127.0.0.1"
    endpoint = parse_mqtt_url(f"{scheme}://shems-ingest:ingest-secret@{host}:{port}{query}")
    part = MqttPartition(MqttSource(endpoint, ["shems/+/+/reading"], client_id_prefix=prefix,
                                    share_group="shems"), 0)
    assert part.connected.is_set(), "the flow's source did not subscribe"
    disconnects = []
    on_disconnect = part.client.on_disconnect
    part.client.on_disconnect = lambda *a: (disconnects.append(a[3]), on_disconnect(*a))
    return part, disconnects


def _drain(part, want: int, timeout: float = 10.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in part.next_batch() if isinstance(m, RawMessage)]
        time.sleep(0.01)
    return got


def _takeover_attack(broker: DeployBroker, attempts: int, readings: int, wait_s: float = 10.0):
    """home-1 sends ``readings`` readings while home-2 connects ``attempts`` times with the flow's
    client id and a persistent session (what took the session over before); returns what the
    flow's source received and how often it was disconnected."""
    part, disconnects = _flow_source(broker.services)
    home, rc = _client(broker.homes, "home-1", "home-1-secret", client_id="home-1")
    assert not rc.is_failure
    attackers = []
    try:
        for i in range(readings):
            if i % (readings // attempts) == 0 and len(attackers) < attempts:
                attacker, _ = _client(broker.homes, "home-2", "home-2-secret", client_id="shems-flow-0",
                                      clean_start=False)
                attackers.append(attacker)
            home.publish("shems/home-1/meter/reading", f'{{"power_w": {i}}}', qos=1).wait_for_publish(5)
        got = _drain(part, readings, wait_s)
        displaced = list(disconnects)  # before our own DISCONNECT below
    finally:
        for c in (home, *attackers):
            c.loop_stop()
            c.disconnect()
        part.close()
    return got, displaced


def test_a_home_using_the_flows_client_id_cannot_take_over_its_session(broker):
    got, disconnects = _takeover_attack(broker, attempts=8, readings=60)
    assert [m.payload for m in got] == [f'{{"power_w": {i}}}'.encode() for i in range(60)]
    assert disconnects == []
    log = broker.log.read_text()
    # The broker replaced the id home-2 sent with its user name: it never was "shems-flow-0".
    assert log.count(" as shems-flow-0 (") == 1, log
    # Each attempt signed in as itself (and, displaced by the next, paho signed in again).
    assert log.count(" as home-2 (") >= 8


def test_without_the_binding_the_same_attack_takes_the_session(tmp_path):
    """The control: the deploy config minus use_username_as_clientid loses the flow's session."""
    unbound, proc = start_deploy_broker(
        tmp_path, edit=lambda conf: conf.replace("use_username_as_clientid true\n", ""))
    try:
        got, disconnects = _takeover_attack(unbound, attempts=2, readings=20, wait_s=3.0)
    finally:
        proc.terminate()
        proc.wait(10)
    assert disconnects, "the attacker should have displaced the flow's connection"
    assert len(got) < 20


def test_a_home_cannot_sign_in_on_the_services_listener_nor_a_service_on_the_homes(broker):
    for port, user, password in ((broker.services, "home-1", "home-1-secret"),
                                 (broker.homes, "shems-ingest", "ingest-secret"),
                                 (broker.homes, "shems-viewer", "viewer-secret")):
        c, rc = _client(port, user, password, client_id="probe")
        c.loop_stop()
        assert rc is not None and rc.is_failure, (port, user)


def test_service_accounts_have_no_home_topics(broker):
    ingest, got = _listening(broker.services, "shems-ingest", "ingest-secret", "shems/#")
    viewer, viewer_got = _listening(broker.services, "shems-viewer", "viewer-secret",
                                    "shems/shems-viewer/+/set")
    # The old `pattern` lines let each service write readings and read commands as "its home".
    ingest.publish("shems/shems-ingest/meter/reading", b'{"power_w": 1}', qos=1).wait_for_publish(5)
    viewer.publish("shems/shems-viewer/meter/reading", b'{"power_w": 2}', qos=1).wait_for_publish(5)
    ingest.publish("shems/shems-viewer/plug/set", b'{"state": "on"}', qos=1).wait_for_publish(5)
    home, _ = _client(broker.homes, "home-1", "home-1-secret")
    home.publish("shems/home-1/meter/reading", b'{"power_w": 3}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert got == [("shems/home-1/meter/reading", b'{"power_w": 3}')]
    assert viewer_got == []
    for c in (ingest, viewer, home):
        c.loop_stop()


def test_the_http_ingest_account_only_publishes_readings(broker):
    """shems http publishes any home's readings (it checked the home's API key) and nothing else:
    no commands, and it reads nothing."""
    ingest, got = _listening(broker.services, "shems-ingest", "ingest-secret", "shems/#")
    http, http_got = _listening(broker.services, "shems-http", "http-secret", "shems/#")
    http.publish("shems/home-1/plug/reading", b'{"power_w": 4}', qos=1).wait_for_publish(5)
    http.publish("shems/home-1/plug/set", b'{"state": "on"}', qos=1).wait_for_publish(5)
    ingest.publish("shems/home-2/meter/reading", b'{"power_w": 5}', qos=1).wait_for_publish(5)
    time.sleep(1.0)
    assert got == [("shems/home-1/plug/reading", b'{"power_w": 4}')]
    assert http_got == []
    for c in (ingest, http):
        c.loop_stop()


def test_the_tls_listeners_carry_a_home_reading_to_the_flow(broker):
    from pipeline.tools.publisher import Publisher

    part, disconnects = _flow_source(broker.services_tls, prefix="shems-tls", tls_ca=broker.ca)
    try:
        home = Publisher(f"mqtts://home-1:home-1-secret@localhost:{broker.homes_tls}?ca_file={broker.ca}",
                         client_id="home-1")
        home.publish_raw("shems/home-1/meter/reading", b'{"power_w": 42}')
        home.close()
        got = _drain(part, 1)
        assert disconnects == []
    finally:
        part.close()
    assert [(m.topic, m.payload) for m in got] == [("shems/home-1/meter/reading", b'{"power_w": 42}')]


# ---- queue settings of the brokers the demo and the tests start ----

ROOT = DEPLOY.parent.parent
ENSURE_SERVICES = ROOT / "scripts" / "ensure_services.sh"


def _conf_values(text: str, keys) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in keys:
            values[parts[0]] = parts[1]
    return values


def test_the_demo_and_test_brokers_get_the_queue_settings_deploy_recommends():
    from pipeline.tools.broker import QUEUE_SETTINGS

    keys = ("max_queued_messages", "max_queued_bytes")
    recommended = _conf_values((DEPLOY / "mosquitto.conf").read_text(), keys)
    assert recommended == {"max_queued_messages": "6000000", "max_queued_bytes": "0"}
    assert QUEUE_SETTINGS == recommended
    assert _conf_values(ENSURE_SERVICES.read_text(), keys) == recommended


def _queued_for_offline_client(port: int, count: int) -> int:
    """Messages a persistent QoS 1 subscriber gets after ``count`` were published while it was away."""
    import uuid

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from pipeline.tools.publisher import Publisher

    client_id, topic = f"offline-{uuid.uuid4().hex[:8]}", f"queue-{uuid.uuid4().hex[:8]}/reading"
    got, subscribed = [], threading.Event()

    def connect(clean_start: bool) -> mqtt.Client:
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id=client_id)
        c.on_message = lambda *a: got.append(1)
        c.on_subscribe = lambda *a: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        c.loop_start()
        return c

    first = connect(clean_start=True)
    first.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    first.disconnect()
    first.loop_stop()
    publisher = Publisher(f"mqtt://127.0.0.1:{port}")
    for i in range(count):
        publisher.publish_raw(topic, str(i))
    publisher.close()
    again = connect(clean_start=False)
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        if len(got) != seen:
            seen, quiet_since = len(got), time.monotonic()
        time.sleep(0.05)
    again.disconnect()
    again.loop_stop()
    return len(got)


def test_the_private_broker_keeps_an_offline_clients_queue_past_debians_1000():
    from pipeline.tools.broker import start_private_broker

    with start_private_broker() as broker:
        assert _queued_for_offline_client(broker.port, 2500) == 2500


def test_a_private_broker_stops_when_the_process_that_started_it_is_killed():
    """SIGKILL runs no cleanup: the broker must not outlive its owner, holding its port."""
    owner = subprocess.Popen(
        [sys.executable, "-c", "from pipeline.tools.broker import start_private_broker\n"
         "import time\nb = start_private_broker()\nprint(b.port, b.process.pid, flush=True)\n"
         "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        port, broker_pid = map(int, owner.stdout.readline().split())
        assert reachable("127.0.0.1", port)
    finally:
        owner.kill()
        owner.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and reachable("127.0.0.1", port, 0.2):
        time.sleep(0.1)
    assert not reachable("127.0.0.1", port, 0.2)
    status = Path(f"/proc/{broker_pid}/status")
    while time.monotonic() < deadline and status.exists() and "\nState:\tZ" not in status.read_text():
        time.sleep(0.1)
    # Gone, or exited and waiting for whoever adopted it to reap it.
    assert not status.exists() or "\nState:\tZ" in status.read_text()


def test_ensure_services_gives_a_running_stock_broker_the_queue_settings_once(tmp_path):
    """A private stand-in for the system broker (never the shared one). Mosquitto 2.0 ignores
    max_queued_* on a reload, so the script must restart a broker that runs without them."""
    port = free_port()
    conf, pid_file = tmp_path / "mosquitto.conf", tmp_path / "mosquitto.pid"
    stock = (f"pid_file {pid_file}\npersistence false\nlistener {port} 127.0.0.1\n"
             f"allow_anonymous true\nuser {getpass.getuser()}\n")
    conf.write_text(stock)
    time.sleep(1.1)  # the broker starts after the file was written, as a real one would
    proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = dict(os.environ, SHEMS_MOSQUITTO_CONF=str(conf), SHEMS_MOSQUITTO_PORT=str(port))
    restarted_pid: int | None = None
    try:
        for _ in range(100):
            if reachable("127.0.0.1", port, 0.2) and pid_file.exists():
                break
            time.sleep(0.05)
        assert _queued_for_offline_client(port, 1500) == 1000  # Debian's default drops the rest
        # Asked not to restart a broker others are using, it only says what to do.
        polite = subprocess.run(["bash", str(ENSURE_SERVICES), "mosquitto"], capture_output=True, text=True,
                                env=dict(env, SHEMS_MOSQUITTO_RESTART="no"), timeout=60)
        assert polite.returncode == 0 and f"Mosquitto (pid {proc.pid}) runs without" in polite.stderr
        assert proc.poll() is None
        first = subprocess.run(["bash", str(ENSURE_SERVICES), "mosquitto"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert f"restarting Mosquitto (pid {proc.pid})" in first.stderr
        assert proc.wait(10) == 0  # stopped cleanly (persistence, if on, is saved)
        restarted_pid = int(pid_file.read_text())
        assert conf.read_text() == stock + f"\ninclude_dir {tmp_path}/conf.d\n"
        assert _conf_values((tmp_path / "conf.d" / "shems.conf").read_text(),
                            ("max_queued_messages", "max_queued_bytes")) == \
            {"max_queued_messages": "6000000", "max_queued_bytes": "0"}
        assert _queued_for_offline_client(port, 1500) == 1500
        # Once the running broker has them, nothing is written or restarted again.
        second = subprocess.run(["bash", str(ENSURE_SERVICES), "mosquitto"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 0 and "restarting" not in second.stderr, second.stderr
        assert conf.read_text().count("include_dir") == 1
        assert int(pid_file.read_text()) == restarted_pid and reachable("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        # The daemon(s) the script started for this test.
        for pid in {restarted_pid, int(pid_file.read_text()) if pid_file.exists() else None} - {None, proc.pid}:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
