"""TLS for real: a throwaway CA made at test time; a real Mosquitto with TLS listeners, a real second
PostgreSQL cluster with ssl=on (verify-full), the real flow between them, and the viewer over HTTPS.
Wrong host names, wrong CAs and missing client certificates are refused."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from pipeline.tools.broker import find_mosquitto, free_port, reachable
from pipeline.tools.publisher import Publisher
from sinks.base import StoreError
from sinks.stores import open_store
from tests.flowproc import FlowProcess
from tests.tlscerts import TestCA

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PASSWORD = "pg-tls-s3cret"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


# ---- MQTT ----

@pytest.fixture(scope="module")
def tls_broker(ca, tmp_path_factory):
    """Mosquitto with two TLS listeners (server certificate for "localhost" only): one for any
    client, one that requires a client certificate from our CA."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (scripts/ensure_services.sh installs it)")
    work = tmp_path_factory.mktemp("mosquitto")
    server = ca.issue("mqtt-server", hosts=("localhost",))
    open_port, mutual_port = free_port(), free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings true\n"
        f"listener {open_port} 127.0.0.1\ncertfile {server.cert}\nkeyfile {server.key}\n"
        f"allow_anonymous true\n"
        f"listener {mutual_port} 127.0.0.1\ncertfile {server.cert}\nkeyfile {server.key}\n"
        f"cafile {ca.cert_path}\nrequire_certificate true\nallow_anonymous true\n"
        f"user {getpass.getuser()}\nlog_dest file {work}/log.txt\n")
    proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not (reachable("127.0.0.1", open_port, 0.2) and reachable("127.0.0.1", mutual_port, 0.2)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mosquitto did not start with TLS: " + proc.stderr.read())
        time.sleep(0.05)
    yield open_port, mutual_port
    proc.terminate()
    proc.wait(10)


def _round_trip(url: str, topic: str) -> list[bytes]:
    got: list[bytes] = []
    arrived = threading.Event()
    publisher = Publisher(url)
    try:
        publisher.subscribe(topic, lambda m: (got.append(m.payload), arrived.set()))
        publisher.publish_raw(topic, b'{"power_w": 7}')
        publisher.flush(10)
        arrived.wait(5)
    finally:
        publisher.close()
    return got


def test_mqtts_round_trip_through_shems_own_client(ca, tls_broker):
    port, _ = tls_broker
    assert _round_trip(f"mqtts://localhost:{port}?ca_file={ca.cert_path}", "tls/a") == [b'{"power_w": 7}']


def test_mqtts_refuses_a_host_name_the_certificate_does_not_name(ca, tls_broker):
    port, _ = tls_broker
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
        Publisher(f"mqtts://127.0.0.1:{port}?ca_file={ca.cert_path}")


def test_mqtts_refuses_a_broker_signed_by_another_ca(tls_broker, tmp_path):
    port, _ = tls_broker
    stranger = TestCA(tmp_path, "another CA")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer|verify failed"):
        Publisher(f"mqtts://localhost:{port}?ca_file={stranger.cert_path}")


def test_mqtts_client_certificate_is_presented_when_given_and_required_by_the_broker(ca, tls_broker):
    _, mutual = tls_broker
    device = ca.issue("device-1", client=True)
    url = f"mqtts://localhost:{mutual}?ca_file={ca.cert_path}&cert_file={device.cert}&key_file={device.key}"
    assert _round_trip(url, "tls/b") == [b'{"power_w": 7}']
    # Without a certificate the broker ends the handshake (seen as a TLS error or a closed socket).
    with pytest.raises((ssl.SSLError, OSError)):
        publisher = Publisher(f"mqtts://localhost:{mutual}?ca_file={ca.cert_path}")
        publisher.subscribe("tls/c", lambda m: None, timeout=3)


# ---- PostgreSQL ----

def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def tls_postgres(ca):
    """A second PostgreSQL 15 cluster, TLS only over TCP (plain TCP rejected), scram passwords;
    its certificate names "localhost" only. Yields (port, CA path)."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    # Not under pytest's tmp_path: the postgres user must be able to enter it.
    work = Path(tempfile.mkdtemp(prefix="shems-pgtls-"))
    data = work / "data"
    server = ca.issue("pg-server", hosts=("localhost",))
    for f in (server.cert, server.key):
        shutil.copy(f, work / f.name)
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
        for f in work.iterdir():
            shutil.chown(f, "postgres", "postgres")
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth-local=trust", "--auth-host=scram-sha-256"]),
                   check=True, capture_output=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"listen_addresses = 'localhost'\nport = {port}\nunix_socket_directories = '{work}'\n"
                   f"ssl = on\nssl_cert_file = '{work / server.cert.name}'\n"
                   f"ssl_key_file = '{work / server.key.name}'\nfsync = off\n")
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n"
        "host all all 127.0.0.1/32 reject\nhost all all ::1/128 reject\n")
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(work / "log"),
                                 "-w", "start"]), check=True, capture_output=True)
    try:
        with psycopg.connect(host=str(work), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE ROLE shems LOGIN PASSWORD '{PG_PASSWORD}'")
            conn.execute("CREATE DATABASE shems OWNER shems")
        yield port
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_postgres_verify_full_through_open_store(ca, tls_postgres):
    url = (f"postgresql://shems:{PG_PASSWORD}@localhost:{tls_postgres}/shems"
           f"?sslmode=verify-full&sslrootcert={ca.cert_path}")
    store = open_store(url)
    try:
        store.migrate()
        # libpq got sslmode and sslrootcert from the URL: the session is encrypted.
        ssl_on, version = store.conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl_on is True and version.startswith("TLS")
    finally:
        store.close()


def test_postgres_verify_full_refuses_a_wrong_host_name_and_a_wrong_ca(ca, tls_postgres, tmp_path):
    wrong_host = (f"postgresql://shems:{PG_PASSWORD}@127.0.0.1:{tls_postgres}/shems"
                  f"?sslmode=verify-full&sslrootcert={ca.cert_path}")
    with pytest.raises(StoreError, match="does not match host name"):
        open_store(wrong_host)
    stranger = TestCA(tmp_path, "another CA")
    wrong_ca = (f"postgresql://shems:{PG_PASSWORD}@localhost:{tls_postgres}/shems"
                f"?sslmode=verify-full&sslrootcert={stranger.cert_path}")
    with pytest.raises(StoreError, match="certificate verify failed"):
        open_store(wrong_ca)
    plain = f"postgresql://shems:{PG_PASSWORD}@localhost:{tls_postgres}/shems?sslmode=disable"
    with pytest.raises(StoreError, match="reject"):
        open_store(plain)


# ---- the real flow: mqtts:// in, PostgreSQL verify-full out, passwords from files ----

def test_the_flow_reads_mqtts_and_writes_postgres_over_verified_tls(ca, tls_broker, tls_postgres,
                                                                    tmp_path, topic_prefix):
    port, _ = tls_broker
    password_file = tmp_path / "store-password"
    password_file.write_text(PG_PASSWORD + "\n")
    store_url = (f"postgresql://shems@localhost:{tls_postgres}/shems"
                 f"?sslmode=verify-full&sslrootcert={ca.cert_path}")
    flow = FlowProcess(f"mqtts://localhost:{port}", store_url, topic_prefix,
                       extra_args=["--mqtt-ca-file", str(ca.cert_path),
                                   "--store-password-file", str(password_file), "--no-insights"])
    flow.start(idle_exit=3)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    publisher = Publisher(f"mqtts://localhost:{port}?ca_file={ca.cert_path}")
    for i in range(30):
        ts = (start + timedelta(seconds=10 * i)).isoformat().replace("+00:00", "Z")
        publisher.publish_raw(f"{topic_prefix}shems/tls-home/meter/reading",
                              json.dumps({"ts": ts, "power_w": 100 + i}))
    publisher.close()
    flow.wait()
    assert PG_PASSWORD not in "\n".join(flow.log_lines)
    store = open_store(store_url.replace("shems@", f"shems:{PG_PASSWORD}@"))
    try:
        stored = [r for r in store.readings() if r.home_id == "tls-home"]
    finally:
        store.close()
    assert sorted(r.power_w for r in stored) == [100.0 + i for i in range(30)]


# ---- the viewer over HTTPS ----

def test_the_viewer_serves_https_with_the_given_certificate(ca, tmp_path, sqlite_url):
    cert = ca.issue("viewer", hosts=("localhost",))
    port = free_port()
    log = tmp_path / "viewer.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "ui", "--store-url", sqlite_url, "--port", str(port),
             "--ssl-cert-file", str(cert.cert), "--ssl-key-file", str(cert.key)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    trusting = ssl.create_default_context(cafile=str(ca.cert_path))
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health is None:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"https://localhost:{port}/_stcore/health", timeout=2,
                                            context=trusting) as r:
                    health = r.read()
            except OSError:
                time.sleep(0.3)
        assert health == b"ok", log.read_text()
        with urllib.request.urlopen(f"https://localhost:{port}/", timeout=5, context=trusting) as r:
            page = r.read().decode()
        assert "<title>" in page and "streamlit" in page.lower()
        assert f"https://127.0.0.1:{port}" in log.read_text()  # what `shems ui` tells the user
        # The certificate is the one we gave it: a client trusting only the system's CAs refuses.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://localhost:{port}/_stcore/health", timeout=5,
                                   context=ssl.create_default_context())
        # And nothing is served in clear text.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=5).read()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_viewer_wants_both_certificate_and_key(ca, sqlite_url):
    cert = ca.issue("viewer-half", hosts=("localhost",))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "ui", "--store-url", sqlite_url,
                           "--ssl-cert-file", str(cert.cert)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["shems: error: HTTPS needs both --ssl-cert-file and --ssl-key-file"]
