"""HTTP ingest end to end: the real `shems http` service (uvicorn, in a subprocess) in front of the
real Mosquitto and a real `shems run` flow, spoken to with a real HTTP client (urllib). Readings
posted in the native format and through emoncms's input API must land in the store; missing,
unknown, revoked and other-home keys, oversized and hostile bodies and a key over its rate get
the right status, the bad input lands in dead_letter, and the service keeps serving."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.apikeys import ApiKeys
from sinks.stores import open_store
from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.flowproc import ROOT, FlowProcess

MQTT_URL = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`shems http` as a child process on a free port."""

    def __init__(self, store_url: str, prefix: str, *extra: str, mqtt_url: str = MQTT_URL,
                 context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.base = f"{'https' if context else 'http'}://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="shems-http-test-")) / "http.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "http", "--port", str(self.port),
             "--store-url", store_url, "--mqtt-url", mqtt_url, "--topic-prefix", prefix,
             "--client-id", f"test-http-{uuid.uuid4().hex[:8]}", *extra],
            cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if call("GET", f"{self.base}/healthz", context=context)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"shems http did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def call(method: str, url: str, body: bytes | str | None = None, headers: dict | None = None,
         timeout: float = 30.0, context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One store, one flow and one service for the module; each test uses its own homes/keys."""
    store_url = f"sqlite:///{tmp_path_factory.mktemp('http') / 'shems.db'}"
    prefix = f"shems-test/{uuid.uuid4().hex[:12]}/"
    store = open_store(store_url)
    store.migrate()
    flow = FlowProcess(MQTT_URL, store_url, prefix, extra_args=["--no-insights"]).start()
    service = Service(store_url, prefix, "--rate", "50", "--burst", "200",
                      "--node-names", "20=power1,power2,vrms")
    keys = ApiKeys(store)
    yield type("Env", (), dict(store_url=store_url, prefix=prefix, store=store, flow=flow,
                               service=service, keys=keys))
    service.stop()
    flow.stop()
    store.close()


def new_key(env, home: str) -> str:
    return env.keys.add(home)[1]


def wait_readings(env, home: str, count: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        readings = env.store.readings(home)
        if len(readings) >= count or time.monotonic() > deadline:
            return readings
        time.sleep(0.2)


def dead_letters(env, topic_part: str) -> list:
    return [d for d in env.store.dead_letters() if topic_part in d.topic]


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_native_readings_land_in_the_store(env):
    home = f"native-{uuid.uuid4().hex[:6]}"
    key = new_key(env, home)
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    batch = [{"device_id": "plug", "ts": iso(t0), "power_w": 12.5, "energy_wh": 100.0},
             {"device_id": "plug", "ts": iso(t0 + timedelta(seconds=10)), "power_w": 13.0},
             {"device_id": "mains", "ts": iso(t0), "power_w": 480.0, "kind": "meter", "voltage_v": 231.0}]
    status, _, body = call("POST", f"{env.service.base}/api/v1/homes/{home}/readings",
                           json.dumps(batch), bearer(key))
    assert (status, json.loads(body)) == (200, {"accepted": 3})
    status, _, body = call("POST", f"{env.service.base}/api/v1/homes/{home}/devices/kettle/readings",
                           json.dumps({"ts": iso(t0), "power_w": 2000}), bearer(key))
    assert (status, json.loads(body)) == (200, {"accepted": 1})
    got = {(r.device_id, r.ts, r.power_w, r.energy_wh, r.voltage_v, r.kind.value)
           for r in wait_readings(env, home, 4)}
    assert got == {("plug", t0, 12.5, 100.0, None, "appliance"),
                   ("plug", t0 + timedelta(seconds=10), 13.0, None, None, "appliance"),
                   ("mains", t0, 480.0, None, 231.0, "meter"),
                   ("kettle", t0, 2000.0, None, None, "appliance")}


def test_emoncms_input_api_lands_in_the_store(env):
    home = f"emon-{uuid.uuid4().hex[:6]}"
    key = new_key(env, home)
    base = env.service.base
    now = int(time.time())
    # EmonESP / ESPHome style: GET with fulljson and the key in the query
    q = urllib.parse.urlencode({"node": "emontx", "time": now - 20, "apikey": key, "fulljson": json.dumps(
        {"power1": 120, "E1": 5012, "power2": 30.5, "vrms": 239.1, "temp": 21.5})})
    assert call("GET", f"{base}/input/post?{q}")[::2] == (200, b"ok")
    # the lenient json= syntax, the node in the path, the key as a bearer token
    q = urllib.parse.urlencode({"json": "{power:200}", "time": now - 15})
    assert call("GET", f"{base}/input/post/plug?{q}", headers={"Authorization": f"Bearer {key}"})[::2] \
        == (200, b"ok")
    # emonhub style: a form POST of bulk data with sentat, the key in the form body
    form = urllib.parse.urlencode({"apikey": key, "sentat": 1000, "data": json.dumps(
        [[990, 10, {"power": 50}], [995, 10, {"power": 55}]])})
    status, _, body = call("POST", f"{base}/input/bulk", form,
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"ok")
    # IoTaWatt style: absolute time reference
    q = urllib.parse.urlencode({"apikey": key, "time": now - 60, "data": json.dumps(
        [[0, "iota", {"power_mains": 800}, {"power_solar": -300}]])})
    assert call("GET", f"{base}/input/bulk.json?{q}")[::2] == (200, b"ok")
    # emonhub: values by position, its rssi last; node 20's names were given to shems http
    form = urllib.parse.urlencode({"apikey": key, "sentat": now, "data": json.dumps([[now - 5, 20, 300, 25, 241, -70]])})
    assert call("POST", f"{base}/input/bulk.json", form,
                {"Content-Type": "application/x-www-form-urlencoded"})[::2] == (200, b"ok")
    readings = wait_readings(env, home, 9)
    got = {(r.device_id, r.power_w, r.energy_wh, r.voltage_v) for r in readings}
    assert got == {("emontx:1", 120.0, 5012.0, 239.1), ("emontx:2", 30.5, None, 239.1),
                   ("plug", 200.0, None, None), ("10", 50.0, None, None), ("10", 55.0, None, None),
                   ("iota:mains", 800.0, None, None), ("iota:solar", -300.0, None, None),
                   ("20:1", 300.0, None, 241.0), ("20:2", 25.0, None, 241.0)}
    when = {(r.device_id, r.power_w): r.ts for r in readings}
    assert when[("emontx:1", 120.0)] == datetime.fromtimestamp(now - 20, timezone.utc)
    assert when[("iota:solar", -300.0)] == datetime.fromtimestamp(now - 60, timezone.utc)
    # sentat=1000: items at 990 and 995 were sent 10 and 5 s before the request arrived
    assert when[("10", 55.0)] - when[("10", 50.0)] == timedelta(seconds=5)
    assert abs((datetime.now(timezone.utc) - when[("10", 55.0)]).total_seconds() - 5) < 30


def test_keys_and_homes(env):
    home, other = f"auth-{uuid.uuid4().hex[:6]}", f"auth-{uuid.uuid4().hex[:6]}"
    key = new_key(env, home)
    url = f"{env.service.base}/api/v1/homes/{home}/readings"
    reading = json.dumps({"device_id": "plug", "power_w": 5})
    status, headers, body = call("POST", url, reading, {"Content-Type": "application/json"})
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    assert call("POST", url, reading, bearer("not-a-key"))[0] == 401
    assert call("GET", f"{env.service.base}/input/post?node=n&json={{power:1}}&apikey=wrong")[0] == 401
    # a key writes its own home only
    status, _, body = call("POST", f"{env.service.base}/api/v1/homes/{other}/readings", reading, bearer(key))
    assert (status, json.loads(body)["error"]) == (403, "forbidden")
    status, _, body = call("POST", url, json.dumps({"device_id": "x", "home_id": other, "power_w": 1}),
                           bearer(key))
    assert status == 400 and json.loads(body)["rejected"][0]["error"] == "bad_id"
    # revoked through the CLI: refused from the next request on
    listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "apikey", "list", "--store-url",
                             env.store_url], cwd=ROOT, capture_output=True, text=True, check=True)
    key_id = next(line.split("\t")[0] for line in listed.stdout.splitlines()
                  if line.split("\t")[1] == home)
    assert call("POST", url, reading, bearer(key))[0] == 200
    subprocess.run([sys.executable, "-m", "pipeline.cli", "apikey", "revoke", key_id, "--store-url",
                    env.store_url], cwd=ROOT, check=True, capture_output=True)
    assert call("POST", url, reading, bearer(key))[0] == 401
    time.sleep(2)
    assert env.store.readings(other) == []
    assert len(env.store.readings(home)) == 1


def test_bad_input_is_refused_and_dead_lettered(env):
    home = f"bad-{uuid.uuid4().hex[:6]}"
    key = new_key(env, home)
    url = f"{env.service.base}/api/v1/homes/{home}/readings"
    status, _, body = call("POST", url, b'{"device_id": "p", "power_w": ', bearer(key))
    assert (status, json.loads(body)["error"]) == (400, "invalid_json")
    status, _, body = call("POST", url, json.dumps([{"device_id": "p", "power_w": 1},
                                                    {"device_id": "p", "power_w": 1e7}]), bearer(key))
    assert status == 400
    assert json.loads(body) == {"accepted": 1, "error": "out_of_bounds", "rejected": [
        {"index": 1, "error": "out_of_bounds",
         "reason": "power_w 1e+07 is outside the bounds [-100000, 100000] W"}]}
    big = json.dumps([{"device_id": "p", "power_w": 1}] * 3000)  # > 64 KiB: the MQTT bound
    status, _, body = call("POST", url, big, bearer(key))
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    # too large with the key in the query and in the body: the stored head of the body hides it
    # (sent chunked, without a Content-Length, so the service reads the head before refusing)
    chunked = iter([f"apikey={key}&data=".encode(), b"y" * 70_000])
    status, _, _ = call("POST", f"{env.service.base}/input/bulk?apikey={key}", chunked,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    # too large and no key anywhere but the (unread) body: refused, nothing stored
    form = "apikey=" + key + "&data=" + "x" * 70_000
    assert call("POST", f"{env.service.base}/input/bulk", form,
                {"Content-Type": "application/x-www-form-urlencoded"})[0] == 413
    q = urllib.parse.urlencode({"apikey": key, "node": "n", "csv": "100,200"})
    status, _, body = call("GET", f"{env.service.base}/input/post?{q}")
    assert (status, json.loads(body)["error"]) == (400, "missing_field")
    deadline = time.monotonic() + 10
    while len(dead_letters(env, f"/homes/{home}/")) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    codes = sorted(d.error for d in dead_letters(env, f"/homes/{home}/"))
    assert codes == ["invalid_json", "out_of_bounds", "too_large"]
    big = [d for d in dead_letters(env, "/input/bulk") if d.error == "too_large" and "yyyy" in d.payload]
    assert len(big) == 1 and key not in big[0].payload and big[0].payload.startswith("apikey=***&data=y")
    emon = [d for d in dead_letters(env, "/input/post") if d.error == "missing_field"
            and "100,200" in d.payload]
    assert emon and key not in emon[0].payload and all(d.step == "http" for d in emon)
    assert len(wait_readings(env, home, 1)) == 1


def test_rate_limit_per_key(env):
    service = Service(env.store_url, env.prefix, "--rate", "0.05", "--burst", "3")
    try:
        home = f"rate-{uuid.uuid4().hex[:6]}"
        key, other = new_key(env, home), new_key(env, home)
        url = f"{service.base}/api/v1/homes/{home}/readings"
        t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=20)
        statuses = [call("POST", url, json.dumps({"device_id": "p", "ts": iso(t0 + timedelta(seconds=i)),
                                                  "power_w": i}), bearer(key)) for i in range(5)]
        assert [s[0] for s in statuses] == [200, 200, 200, 429, 429]
        assert int(statuses[3][1]["retry-after"]) >= 1 and json.loads(statuses[3][2])["error"] == "rate_limited"
        assert call("POST", url, json.dumps({"device_id": "q", "power_w": 1}), bearer(other))[0] == 200
        assert {r.power_w for r in wait_readings(env, home, 4) if r.device_id == "p"} == {0.0, 1.0, 2.0}
        # guessing keys: after 20 wrong ones an address is slowed down before the store is asked
        wrong = [call("POST", url, "{}", bearer(f"guess-{i}"))[0] for i in range(25)]
        assert wrong[:20] == [401] * 20 and 429 in wrong[20:]
    finally:
        service.stop()


def test_broker_outage_is_503_then_recovers(env):
    """Readings are answered 200 only once the broker acknowledged them: while it is down the
    device hears 503 (and retries), and the service reconnects by itself."""
    from pipeline.tools.broker import start_private_broker

    broker = start_private_broker()
    port = broker.port
    service = Service(env.store_url, env.prefix, "--publish-timeout", "2", mqtt_url=broker.url)
    try:
        home = f"outage-{uuid.uuid4().hex[:6]}"
        key = new_key(env, home)
        url = f"{service.base}/api/v1/homes/{home}/readings"
        reading = json.dumps({"device_id": "p", "power_w": 1})
        assert call("POST", url, reading, bearer(key))[0] == 200
        broker.stop()
        time.sleep(1)
        status, headers, body = call("POST", url, reading, bearer(key))
        assert (status, json.loads(body)["error"]) == (503, "broker_unavailable")
        assert int(headers["retry-after"]) > 0
        assert call("GET", f"{service.base}/healthz")[0] == 503
        broker = start_private_broker(port)
        deadline = time.monotonic() + 60
        while call("POST", url, reading, bearer(key))[0] != 200:
            assert time.monotonic() < deadline, service.log.read_text()
            time.sleep(1)
        assert call("GET", f"{service.base}/healthz")[0] == 200
    finally:
        service.stop()
        broker.stop()
    assert "Traceback" not in service.log.read_text()


PATHS = ["/api/v1/homes/{home}/readings", "/api/v1/homes/{home}/devices/d1/readings",
         "/input/post", "/input/bulk", "/input/post/n1"]


HOSTILE_REJECTED: list[int] = []  # items the native paths refused, one entry per request


@pytest.fixture(scope="module")
def hostile_key(env):
    home = f"hostile-{uuid.uuid4().hex[:6]}"
    return home, new_key(env, home)


@given(path=st.sampled_from(PATHS),
       body=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode)
       | st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
                      lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.sampled_from(["device_id", "power_w", "ts", "kind", "home_id",
                                                         "energy_wh", "x"]) | st.text(max_size=8),
                                        inner, max_size=5),
                      max_leaves=25).map(lambda v: json.dumps(v).encode()),
       query=st.dictionaries(st.sampled_from(["node", "fulljson", "json", "csv", "data", "time",
                                              "sentat", "offset", "kind"]), st.text(max_size=100),
                             max_size=4),
       form=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_requests_get_an_answer_and_never_break_the_service(env, hostile_key, path, body,
                                                                    query, form):
    home, key = hostile_key
    url = env.service.base + path.format(home=home) + "?" + urllib.parse.urlencode(query)
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    status, _, answer = call("POST", url, body, {"Authorization": f"Bearer {key}",
                                                  "Content-Type": content_type})
    assert status in (200, 400), (status, answer)
    if answer != b"ok":
        parsed = json.loads(answer)
        assert parsed["accepted"] >= 0 and (status == 200) == ("rejected" not in parsed)
        if path.startswith("/api/"):
            HOSTILE_REJECTED.append(len(parsed.get("rejected", [])))


def test_the_service_still_serves_after_the_hostile_run(env, hostile_key):
    home, key = hostile_key
    status, _, _ = call("POST", f"{env.service.base}/api/v1/homes/{home}/devices/after/readings",
                        json.dumps({"power_w": 42}), bearer(key))
    assert status == 200
    assert any(r.device_id == "after" and r.power_w == 42 for r in wait_readings(env, home, 10_000, 10))
    # every refused item of the native paths is in dead_letter, none more, none lost
    assert HOSTILE_REJECTED and sum(HOSTILE_REJECTED) > 0
    assert len(dead_letters(env, f"/homes/{home}/")) == sum(HOSTILE_REJECTED)
    assert env.service.proc.poll() is None and env.flow.proc.poll() is None
    log = env.service.log.read_text()
    assert "Traceback" not in log and key not in log and "http_request" in log


def test_postgres_store(pg_url, topic_prefix):
    """The same service and flow on PostgreSQL: keys looked up and dead letters written on the
    store's connection from the service's threads."""
    store = open_store(pg_url)
    store.migrate()
    flow = FlowProcess(MQTT_URL, pg_url, topic_prefix, extra_args=["--no-insights"]).start()
    service = Service(pg_url, topic_prefix)
    try:
        key = ApiKeys(store).add("pg-home")[1]
        url = f"{service.base}/api/v1/homes/pg-home/readings"
        batch = [{"device_id": f"d{i}", "power_w": i} for i in range(20)] + [{"device_id": "x", "power_w": "?"}]
        status, _, body = call("POST", url, json.dumps(batch), bearer(key))
        assert status == 400 and json.loads(body)["accepted"] == 20
        q = urllib.parse.urlencode({"apikey": key, "node": "emonpi", "fulljson": '{"power1": 7}'})
        assert call("GET", f"{service.base}/input/post?{q}")[::2] == (200, b"ok")
        deadline = time.monotonic() + 30
        while len(store.readings("pg-home")) < 21 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {r.device_id for r in store.readings("pg-home")} == {f"d{i}" for i in range(20)} | {"emonpi:1"}
        assert [d.error for d in store.dead_letters() if d.step == "http"] == ["invalid_payload"]
    finally:
        service.stop()
        flow.stop()
        store.close()


def test_https(env, tmp_path):
    from tests.tlscerts import TestCA

    ca = TestCA(tmp_path / "certs")
    issued = ca.issue("http", hosts=("127.0.0.1", "localhost"))
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    service = Service(env.store_url, env.prefix, "--ssl-cert-file", str(issued.cert),
                      "--ssl-key-file", str(issued.key), context=context)
    try:
        home = f"tls-{uuid.uuid4().hex[:6]}"
        key = new_key(env, home)
        q = urllib.parse.urlencode({"apikey": key, "node": "n", "fulljson": '{"power": 3}'})
        assert call("GET", f"{service.base}/input/post?{q}", context=context)[::2] == (200, b"ok")
        assert [r.power_w for r in wait_readings(env, home, 1)] == [3.0]
        with pytest.raises(OSError):  # plain HTTP is not spoken: the connection is closed
            call("GET", f"http://127.0.0.1:{service.port}/healthz", timeout=5)
    finally:
        service.stop()


def test_apikey_cli(env, tmp_path):
    url = env.store_url

    def shems(*args):
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    added = shems("apikey", "add", "cli-home", "--label", "emonpi", "--store-url", url)
    assert added.returncode == 0
    key = added.stdout.strip()
    assert len(key) == 32 and "shown only now" in added.stderr
    listed = shems("apikey", "list", "--store-url", url)
    assert "cli-home" in listed.stdout and "emonpi" in listed.stdout and key not in listed.stdout
    for args in (("apikey", "add", "a/b", "--store-url", url),
                 ("apikey", "revoke", "nosuchkey", "--store-url", url),
                 ("apikey", "list", "--store-url", "postgresql://nobody@127.0.0.1:1/x"),
                 ("http", "--store-url", url, "--mqtt-url", "mqtt://127.0.0.1:1", "--port", str(free_port()))):
        done = shems(*args)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
