"""`shems ui` starts on an empty store (creating the schema); `shems user` manages accounts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.records import DeviceInfo, DeviceKind, Source
from sinks.migrate import migrations
from sinks.stores import open_store
from tests.viewer_server import ROOT, ViewerServer
from ui.accounts import Accounts
from ui.auth import Role
from ui.db import Database


def shems(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_shems_ui_starts_on_an_empty_postgres_and_creates_the_schema(pg_url):
    server = ViewerServer(pg_url)
    try:
        server.wait_healthy()
        db = Database(pg_url, migrate=False)
        try:
            newest = max(m.version for m in migrations("postgres") + migrations("postgres_plain"))
            assert db.rows("SELECT max(version) FROM schema_migrations") == [(newest,)]
            assert db.rows("SELECT count(*) FROM users") == [(0,)]
        finally:
            db.close()
    finally:
        server.stop()
    assert "shems viewer on http://127.0.0.1:" in server.log.read_text()


def test_shems_ui_says_what_is_wrong_with_a_bad_store():
    proc = shems("ui", "--store-url", "postgresql://nobody@127.0.0.1:1/none", "--port", "8765")
    assert proc.returncode == 2
    assert proc.stderr.startswith("shems: error: cannot open the store postgresql://nobody@127.0.0.1:1/none")


@pytest.fixture
def homes_url(sqlite_url: str) -> str:
    """A store that knows homes h1 and h2 (their meters are registered): `user add` checks them."""
    store = open_store(sqlite_url)
    try:
        store.migrate()
        store.upsert_devices([DeviceInfo(h, "mains", DeviceKind.METER, Source.NATIVE) for h in ("h1", "h2")])
    finally:
        store.close()
    return sqlite_url


def test_user_add_passwd_list_remove(homes_url):
    sqlite_url = homes_url
    added = shems("user", "add", "alice", "--role", "homeowner", "--home", "h1", "--home", "h2",
                  "--password-stdin", "--store-url", sqlite_url, stdin="first-password\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added alice (homeowner: h1, h2)"
    shems("user", "add", "olga", "--role", "operator", "--password-stdin", "--store-url", sqlite_url,
          stdin="olga-password\n")
    listed = shems("user", "list", "--store-url", sqlite_url)
    assert listed.stdout.splitlines() == ["alice\thomeowner\th1,h2", "olga\toperator\t"]
    assert shems("user", "passwd", "alice", "--password-stdin", "--store-url", sqlite_url,
                 stdin="second-password\n").returncode == 0
    db = Database(sqlite_url, migrate=False)
    try:
        accounts = Accounts(db)
        assert accounts.sign_in("alice", "second-password").principal.role is Role.HOMEOWNER
        assert shems("user", "remove", "alice", "--store-url", sqlite_url).returncode == 0
        assert accounts.principal("alice") is None
        actions = [a for (a,) in db.rows("SELECT action FROM audit_log WHERE username LIKE 'cli%' "
                                         "ORDER BY id")]
        assert actions == ["user_add", "user_add", "user_passwd", "user_remove"]
    finally:
        db.close()


def test_user_errors_are_sentences_with_a_non_zero_exit(homes_url):
    sqlite_url = homes_url
    short = shems("user", "add", "bob", "--home", "h1", "--password-stdin", "--store-url", sqlite_url,
                  stdin="short\n")
    assert short.returncode == 2 and "a password needs at least 10 characters" in short.stderr
    no_home = shems("user", "add", "bob", "--password-stdin", "--store-url", sqlite_url,
                    stdin="long-enough-1\n")
    assert no_home.returncode == 2 and "a homeowner needs at least one home (--home)" in no_home.stderr
    no_tty = shems("user", "add", "bob", "--home", "h1", "--store-url", sqlite_url, stdin="")
    assert no_tty.returncode == 2 and "--password-stdin" in no_tty.stderr
    missing = shems("user", "remove", "nobody", "--store-url", sqlite_url)
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr


@pytest.mark.parametrize("argv, message", [
    (["--home", "NoSuchHouse"], "no home 'NoSuchHouse' in the store (homes there: h1, h2)"),
    (["--home", "h1", "--home", "h3"], "no home 'h3'"),
    (["--role", "operator", "--home", "h1"], "an operator sees every home: --home is for homeowners only"),
    (["--role", "admin", "--home", "h1"], "an admin sees every home"),
    ([], "a homeowner needs at least one home (--home)"),
])
def test_user_add_refuses_unknown_homes_and_role_home_mismatches(homes_url, argv, message):
    proc = shems("user", "add", "carol", *argv, "--password-stdin", "--store-url", homes_url,
                 stdin="long-enough-1\n")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert shems("user", "list", "--store-url", homes_url).stdout == ""  # nobody was added
