"""Secrets from files (Docker/Kubernetes style) stay out of URLs on command lines, and no password,
wherever it sits in a URL, reaches a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import structlog

from pipeline import logs
from pipeline.cli import build_parser
from pipeline.config import parse_mqtt_url
from sinks.base import mask_url
from tests.flowproc import FlowProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("url, masked", [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p%40ss:w/rd@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u@h/db?password=abc&sslmode=verify-full", "postgresql://u@h/db?password=***&sslmode=verify-full"),
    ("postgresql://u@h/db?sslmode=verify-full&sslpassword=key-pass&sslrootcert=/ca.crt",
     "postgresql://u@h/db?sslmode=verify-full&sslpassword=***&sslrootcert=/ca.crt"),
    ("postgresql://h/db?user=u&PASSWORD=x#f", "postgresql://h/db?user=u&PASSWORD=***#f"),
    ("mqtts://shems-ingest:s%2Fcret@broker:8883?ca_file=/ca.crt", "mqtts://shems-ingest:***@broker:8883?ca_file=/ca.crt"),
    ("host=db user=u password='two words' dbname=x", "host=db user=u password=*** dbname=x"),
    ("mqtt://broker:1883", "mqtt://broker:1883"),
    ("sqlite:///.shems/shems.db", "sqlite:///.shems/shems.db"),
    ("postgresql://u@h/db?sslmode=require&passwordless=1", "postgresql://u@h/db?sslmode=require&passwordless=1"),
])
def test_mask_url_hides_every_password(url, masked):
    assert mask_url(url) == masked


def test_the_log_processor_masks_passwords_in_any_logged_string(capsys):
    logs.configure(json=True)
    log = logs.get_logger("test_secrets")
    log.warning(
        "store postgresql://u:ev-pw1@h/db unreachable",
        store="postgresql://u@h/db?password=ev-pw2",
        detail={"urls": ["mqtt://a:ev-pw3@b", ("x", "postgresql://h/db?sslpassword=ev-pw4")]},
        dsn="host=h password=ev-pw5",
        password="ev-pw6",
        count=3,
    )
    out = capsys.readouterr().err
    structlog.reset_defaults()
    assert "ev-pw" not in out
    event = json.loads(out.strip().splitlines()[-1])
    assert event["event"] == "store postgresql://u:***@h/db unreachable"
    assert event["store"] == "postgresql://u@h/db?password=***"
    assert event["detail"] == {"urls": ["mqtt://a:***@b", ["x", "postgresql://h/db?sslpassword=***"]]}
    assert event["dsn"] == "host=h password=***" and event["password"] == "***" and event["count"] == 3


def test_a_real_run_keeps_passwords_from_files_out_of_its_command_line_and_logs(pg_url, mqtt_url, topic_prefix,
                                                                               tmp_path):
    """The shared broker lets anyone in, whatever the password: what matters is where it shows."""
    mqtt_password = tmp_path / "mqtt-password"
    mqtt_password.write_text("mq-file-s3cret\n")
    store_url = pg_url + ("&" if "?" in pg_url else "?") + "password=pg-query-s3cret"
    with_user = mqtt_url.replace("mqtt://", "mqtt://someone@")
    flow = FlowProcess(with_user, store_url, topic_prefix,
                       extra_args=["--mqtt-password-file", str(mqtt_password), "--no-insights"])
    flow.start(idle_exit=2)
    cmdline = Path(f"/proc/{flow.proc.pid}/cmdline").read_bytes().decode()
    flow.wait()
    assert "mq-file-s3cret" not in cmdline and str(mqtt_password) in cmdline
    text = "\n".join(flow.log_lines)
    assert "s3cret" not in text
    starting = next(json.loads(line) for line in flow.log_lines
                    if line.startswith("{") and json.loads(line)["event"] == "flow_starting")
    assert starting["mqtt"] == with_user.replace("someone@", "someone:***@")
    assert "password=***" in starting["store"]


def test_password_files_go_into_the_urls_exactly(tmp_path):
    awkward = "p@ss:w/rd %?&=#"
    (tmp_path / "mqtt").write_text(awkward + "\n")
    (tmp_path / "pg").write_text(awkward)
    args = build_parser().parse_args([
        "run", "--mqtt-url", "mqtt://shems-ingest:old@broker:1884", "--mqtt-password-file", str(tmp_path / "mqtt"),
        "--store-url", "postgresql://shems@db:5432/shems?sslmode=verify-full",
        "--store-password-file", str(tmp_path / "pg")])
    endpoint = parse_mqtt_url(args.mqtt_url)
    assert (endpoint.username, endpoint.password, endpoint.host, endpoint.port) == \
        ("shems-ingest", awkward, "broker", 1884)
    params = psycopg.conninfo.conninfo_to_dict(args.store_url)
    assert params["password"] == awkward and params["user"] == "shems" and params["sslmode"] == "verify-full"
    assert awkward not in mask_url(args.store_url) and "p%40" not in mask_url(args.store_url)


def test_tls_flags_go_into_the_mqtt_url(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.crt", "c.crt", "c.key"))
    for f in (ca, cert, key):
        f.write_text("-")
    args = build_parser().parse_args(["run", "--mqtt-url", "mqtts://broker", "--mqtt-ca-file", str(ca),
                                      "--mqtt-cert-file", str(cert), "--mqtt-key-file", str(key)])
    endpoint = parse_mqtt_url(args.mqtt_url)
    assert (endpoint.tls, endpoint.port, endpoint.ca_file, endpoint.cert_file, endpoint.key_file) == \
        (True, 8883, str(ca), str(cert), str(key))


def test_any_flag_can_come_from_a_file_named_by_its_env_variable(monkeypatch, tmp_path):
    (tmp_path / "store-url").write_text("postgresql://shems:from-file@db/shems\n")
    (tmp_path / "mqtt-url").write_text("mqtt://shems-ingest:mq@broker:1884")
    monkeypatch.setenv("SHEMS_STORE_URL_FILE", str(tmp_path / "store-url"))
    monkeypatch.setenv("SHEMS_MQTT_URL_FILE", str(tmp_path / "mqtt-url"))
    args = build_parser().parse_args(["run"])
    assert args.store_url == "postgresql://shems:from-file@db/shems"
    assert args.mqtt_url == "mqtt://shems-ingest:mq@broker:1884"
    ui = build_parser().parse_args(["ui"])
    assert ui.store_url == "postgresql://shems:from-file@db/shems"
    # The plain variable still wins over the file, and the command line over both.
    monkeypatch.setenv("SHEMS_STORE_URL", "sqlite:///env.db")
    assert build_parser().parse_args(["run"]).store_url == "sqlite:///env.db"
    assert build_parser().parse_args(["run", "--store-url", "sqlite:///flag.db"]).store_url == "sqlite:///flag.db"


@pytest.mark.parametrize("args, env, message", [
    (["run", "--mqtt-password-file", "/nonexistent/pw"], {}, "no such file: /nonexistent/pw"),
    (["run", "--store-password-file", "{empty}"], {}, "needs a postgresql:// store URL"),
    (["run", "--store-url", "postgresql://db/shems", "--store-password-file", "{empty}"], {},
     "is empty"),
    (["run", "--store-url", "postgresql://db/shems", "--store-password-file", "{pw}"], {},
     "needs a user name in the URL"),
    (["run", "--mqtt-ca-file", "{pw}"], {}, "need an mqtts:// URL"),
    (["run", "--mqtt-url", "mqtts://b?cafile=/x"], {}, "unknown MQTT URL parameter 'cafile'"),
    (["run", "--mqtt-url", "mqtts://b", "--mqtt-cert-file", "{pw}"], {}, "needs both cert_file and key_file"),
    (["run"], {"SHEMS_STORE_URL_FILE": "/nonexistent/url"}, "SHEMS_STORE_URL_FILE: cannot read the secret file"),
])
def test_bad_secret_options_exit_2_with_a_reason(tmp_path, args, env, message):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "pw").write_text("secret-value\n")
    argv = [a.format(empty=tmp_path / "empty", pw=tmp_path / "pw") for a in args]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and "secret-value" not in proc.stderr
