"""At start-up, a store or broker that cannot be reached, or a broker that refuses the flow's
credentials, ends `shems run` with one line on stderr and a non-zero exit within 30 s: never a
traceback, never a flow that runs receiving nothing (before: a wrong password with --idle-exit
exited 0, and an unreachable PostgreSQL printed psycopg's traceback).

The broker is a private Mosquitto with a password file and an ACL, started on a free port."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.tools.broker import find_mosquitto, free_port, reachable
from tests.flowproc import ROOT

PASSWORD = "s3cret-flow-pw"
WRONG = "wrong-pw-0815"


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory):
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: the start-up checks cannot be tested")
    tmp = tmp_path_factory.mktemp("broker")
    passwd = tmp / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "flow", PASSWORD], check=True,
                   capture_output=True)
    # (A subscription the ACL denies is not testable here: Mosquitto 2.0 grants it and then
    # delivers nothing; the source treats a refused SUBACK like a refused CONNACK.)
    acl = tmp / "acl"
    acl.write_text("user flow\ntopic read #\ntopic read $SYS/broker/#\n")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                    f"acl_file {acl}\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        if reachable("127.0.0.1", port, 0.2):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("private mosquitto did not start")
    yield port
    proc.terminate()
    proc.wait(10)


def _run(mqtt_url: str, store_url: str, *extra: str) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--mqtt-url", mqtt_url,
           "--store-url", store_url, "--idle-exit", "2", "--topic-prefix", "startup-test/", *extra]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr, time.monotonic() - started


def _assert_one_line_error(rc: int, stderr: str, elapsed: float, expected: str) -> None:
    assert rc == 1, (rc, stderr[-2000:])
    assert elapsed < 30, elapsed
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("shems run: error: "), last
    assert expected in last, last
    assert PASSWORD not in stderr and WRONG not in stderr  # a password never reaches the output


@pytest.mark.parametrize("user, expected", [
    (f"flow:{WRONG}", "refused client"),  # wrong password
    ("", "refused client"),  # anonymous, not allowed
])
def test_refused_by_the_broker_is_one_line_and_exit_1(secured_broker, sqlite_url, user, expected):
    auth = f"{user}@" if user else ""
    rc, stderr, elapsed = _run(f"mqtt://{auth}127.0.0.1:{secured_broker}", sqlite_url)
    _assert_one_line_error(rc, stderr, elapsed, expected)


def test_right_password_runs_and_idles_out(secured_broker, sqlite_url):
    rc, stderr, _ = _run(f"mqtt://flow:{PASSWORD}@127.0.0.1:{secured_broker}", sqlite_url)
    assert rc == 0, stderr[-2000:]
    assert "mqtt_subscribed" in stderr


def test_unreachable_broker_is_one_line_and_exit_1_within_30_s_by_default(sqlite_url):
    rc, stderr, elapsed = _run(f"mqtt://127.0.0.1:{free_port()}", sqlite_url)
    _assert_one_line_error(rc, stderr, elapsed, "cannot reach the MQTT broker")


def test_unreachable_postgres_is_one_line_and_exit_1(mqtt_url):
    store = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/shems"
    rc, stderr, elapsed = _run(mqtt_url, store)
    # "cannot open the store ...", or "... did not answer within" where the store itself retries
    # refused connections.
    _assert_one_line_error(rc, stderr, elapsed, "the store postgresql://postgres:***@127.0.0.1:")


def test_unwritable_sqlite_is_one_line_and_exit_1(mqtt_url, tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    rc, stderr, elapsed = _run(mqtt_url, f"sqlite:///{blocker}/shems.db")
    _assert_one_line_error(rc, stderr, elapsed, "the store sqlite:///")
