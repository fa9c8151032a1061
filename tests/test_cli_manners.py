"""Every `shems` subcommand keeps the same manners: an unreachable store or broker, a bad file or a
bad value ends it with one line on stderr, a non-zero exit and no traceback; a typo'd flag shows
that subcommand's usage and the closest flag; `--help` states the defaults.

The subcommands are read from the parser itself (pipeline.cli.build_parser), so one added later
(`shems http`, `shems apikey`, ...) is held to the same manners without editing this file. Each
case runs the real command in its own process, all cases of a test at once (an unreachable
PostgreSQL is retried for 20 s before the command gives up: waiting, not working).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.cli.args import existing_file, listen_address, postgres_store_url, topic_prefix
from pipeline.cli.args import port as port_type
from pipeline.cli.run import ha_prefix
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = FIXTURES / "refit_house2_2h_wide.csv"
# Options that take a file but are about TLS or secrets: a garbage one is a different story
# (tests/test_tls.py, tests/test_secrets.py).
_SECRET_FILES = {"--mqtt-ca-file", "--mqtt-cert-file", "--mqtt-key-file", "--mqtt-password-file",
                 "--store-password-file", "--ssl-cert-file", "--ssl-key-file"}
# Arguments some subcommands need before they reach the store or broker at all. A subcommand not
# listed gets the generic treatment (a file for each file argument, a word for each other).
_NEEDS: dict[tuple[str, ...], list[str]] = {
    ("user", "add"): ["--home", "h1", "--password-stdin"],
    ("user", "passwd"): ["--password-stdin"],
    ("plan",): ["--tariffs", str(ROOT / "deploy" / "tariffs.example.toml"), "--home", "h1",
                "--load", "dw,1,2,19:00,07:00"],
    ("simulate",): ["--duration", "5"],
    ("demo",): ["--duration", "5"],
    ("bench", "ingest"): ["--devices", "1", "--seconds", "1"],
    ("bill",): ["--home", "h1"],
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def options(self) -> dict[str, argparse.Action]:
        return {a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0]: a
                for a in self.parser._actions if a.option_strings}

    def positionals(self) -> list[argparse.Action]:
        return [a for a in self.parser._actions if not a.option_strings]

    def base_args(self, file: Path) -> list[str]:
        """The subcommand with every positional filled in (a file where a file is expected)."""
        out = list(self.path)
        for action in self.positionals():
            out.append(str(file) if action.type is existing_file else "someone")
        return out + _NEEDS.get(self.path, [])


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield Leaf(path, parser)
        return
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaves(child, (*path, name))


LEAVES = list(_leaves(build_parser()))
UNREACHABLE_STORE = f"postgresql://postgres:s3cret@127.0.0.1:{_closed_port()}/shems"
UNREACHABLE_BROKER = f"mqtt://127.0.0.1:{_closed_port()}"


@dataclass
class Case:
    label: str
    argv: list[str]
    stdin: str = "long-enough-password\n"


def _run(case: Case, tmp: Path) -> subprocess.CompletedProcess:
    # This checkout's code, though the commands run in a scratch directory (where any stray file
    # they wrote would land).
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    for key in list(env):
        if key.startswith("SHEMS_") and not key.startswith("SHEMS_TEST_"):
            del env[key]  # only the flags given here
    try:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *case.argv], cwd=tmp, env=env,
                              input=case.stdin, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -9, "", f"TIMEOUT after {exc.timeout} s")


def _human_lines(stderr: str) -> list[str]:
    """stderr without the structured log lines (JSON objects, one a line) that `run`, `import`
    and the publishers write for log collectors: what is left is what a person reads."""
    return [line for line in stderr.splitlines()
            if line.strip() and not (line.startswith("{") and line.rstrip().endswith("}"))]


def _run_all(cases: list[Case], tmp: Path) -> list[tuple[Case, subprocess.CompletedProcess]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(zip(cases, pool.map(lambda c: _run(c, tmp), cases), strict=True))


def _assert_one_line(results, *, exit_code: int | None = None) -> None:
    problems = []
    for case, proc in results:
        lines = _human_lines(proc.stderr)
        if (proc.returncode == 0 or (exit_code is not None and proc.returncode != exit_code)
                or "Traceback" in proc.stderr or "panicked" in proc.stderr or len(lines) != 1
                or "error" not in lines[0] or "s3cret" in proc.stderr):
            problems.append(f"{case.label}: exit {proc.returncode}, stderr:\n{proc.stderr[-1500:]}")
    assert not problems, "\n\n".join(problems)


def test_the_parser_lists_every_subcommand():
    names = {leaf.name for leaf in LEAVES}
    assert {"run", "import", "export", "ui", "user add", "user list", "bench ingest"} <= names


def test_an_unreachable_store_or_broker_is_one_line_in_every_subcommand(tmp_path):
    cases = []
    for leaf in LEAVES:
        options = leaf.options()
        argv = leaf.base_args(SAMPLE)
        if "--store-url" not in options and "--mqtt-url" not in options:
            continue
        if "--store-url" in options:
            argv += ["--store-url", UNREACHABLE_STORE]
        if "--mqtt-url" in options:
            argv += ["--mqtt-url", UNREACHABLE_BROKER]
        if "--startup-timeout" in options:
            argv += ["--startup-timeout", "3"]
        cases.append(Case(f"{leaf.name} (unreachable)", argv))
    assert len(cases) >= 10
    _assert_one_line(_run_all(cases, tmp_path))


def _bad_value(action: argparse.Action) -> str | None:
    """A value the option must refuse, or None when it takes any text."""
    if action.choices is not None:
        return "no-such-choice"
    if action.type in (None, str, Path) or action.nargs == 0:
        return None
    if action.type is ha_prefix:
        return "homeassistant/#"  # a topic prefix takes most text, never a wildcard
    return "bogus:1e999x"  # no number, URL, port, time zone, date or file is spelt so


def _nowhere(leaf: Leaf, tmp: Path) -> list[str]:
    """A store that fails at once and a broker that refuses: should a command take what it was
    given, it still ends quickly and touches nothing shared."""
    options = leaf.options()
    tail = []
    if "--store-url" in options:
        postgres_only = options["--store-url"].type is postgres_store_url
        tail += ["--store-url", UNREACHABLE_STORE if postgres_only else f"sqlite:///{tmp / 'no-such-dir' / 'x.db'}"]
    if "--mqtt-url" in options:
        tail += ["--mqtt-url", UNREACHABLE_BROKER]
    return tail


def test_a_bad_value_is_one_line_in_every_subcommand(tmp_path):
    cases = []
    for leaf in LEAVES:
        tried = set()  # one flag per argument type and leaf: the type is what refuses the value
        for flag, action in leaf.options().items():
            value = _bad_value(action)
            kind = action.type if action.choices is None else tuple(action.choices)
            if value is None or flag in _SECRET_FILES or kind in tried:
                continue
            tried.add(kind)
            cases.append(Case(f"{leaf.name} {flag}={value}",
                              [*leaf.base_args(SAMPLE), *_nowhere(leaf, tmp_path), f"{flag}={value}"]))
    assert len(cases) >= 20
    results = _run_all(cases, tmp_path)
    _assert_one_line(results, exit_code=2)
    for case, proc in results:  # refused by argparse, naming the flag, before anything ran
        flag = case.argv[-1].split("=")[0]
        assert f"argument {flag}" in proc.stderr or flag in proc.stderr, (case.label, proc.stderr)


def test_a_bad_file_is_one_line_in_every_subcommand(tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\xff not a table \xfe\n" * 64)
    missing = tmp_path / "missing.csv"
    cases = []
    for leaf in LEAVES:
        options = leaf.options()
        tail = _nowhere(leaf, tmp_path)
        for action in leaf.positionals():
            if action.type is existing_file:
                cases.append(Case(f"{leaf.name} FILE=missing", [*leaf.base_args(missing), *tail]))
                cases.append(Case(f"{leaf.name} FILE=garbage", [*leaf.base_args(garbage), *tail]))
        for flag, action in options.items():
            if action.type is existing_file and flag not in _SECRET_FILES:
                cases.append(Case(f"{leaf.name} {flag} garbage",
                                  [*leaf.base_args(SAMPLE), *tail, flag, str(garbage)]))
    assert len(cases) >= 8
    _assert_one_line(_run_all(cases, tmp_path))


def test_a_typo_in_a_flag_shows_the_subcommands_usage_and_the_closest_flag(tmp_path):
    cases = []
    for leaf in LEAVES:
        flag = next(f for f in leaf.options() if f not in ("--help",))  # the first of its own flags
        typo = flag[:-1] + "x" if len(flag) > 4 else flag + "x"
        cases.append(Case(leaf.name, [*leaf.base_args(SAMPLE), *_nowhere(leaf, tmp_path), typo, "1"]))
    for case, proc in _run_all(cases, tmp_path):
        prog = f"shems {' '.join(case.argv[:len(case.label.split())])}"
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (case.label, proc.stderr)
        assert proc.stderr.startswith(f"usage: {prog} "), (case.label, proc.stderr)
        last = proc.stderr.splitlines()[-1]
        assert last.startswith(f"{prog}: error: unrecognized arguments:"), (case.label, last)
        assert "(did you mean --" in last, (case.label, last)


def test_a_typo_in_a_subcommand_suggests_the_closest():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "imprt"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].endswith("(did you mean import?)")


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.name)
def test_help_states_the_defaults(leaf):
    text = leaf.parser.format_help()
    # Each option's entry: its line and the indented lines under it, as one line of words.
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current is not None and line.startswith("     "):
            entries[current] += line
        else:
            current = None
    for flag, action in leaf.options().items():
        if action.default in (None, False, "", argparse.SUPPRESS) or not action.help:
            continue
        entry = " ".join(next(e for k, e in entries.items() if flag in e.split()[:3] or k == flag).split())
        assert "(default: " in entry, (leaf.name, entry)


def test_help_never_shows_a_secret(tmp_path, monkeypatch):
    secret = tmp_path / "store_url"
    secret.write_text("postgresql://shems:hunter2-secret@db/shems\n")
    monkeypatch.setenv("SHEMS_STORE_URL_FILE", str(secret))
    monkeypatch.setenv("SHEMS_MQTT_URL", "mqtt://bob:broker-secret@broker:1883")
    text = "".join(leaf.parser.format_help() for leaf in _leaves(build_parser()))
    assert "hunter2-secret" not in text and "broker-secret" not in text
    assert "mqtt://bob:***@broker:1883" in text


@pytest.mark.parametrize("prefix", ["site1", "site1/+/", "a/#/", "x\x00/"])
def test_a_topic_prefix_the_flow_could_not_subscribe_under_is_refused(prefix):
    """Without its trailing '/', a prefix glues the flow's '+' wildcards to text: the broker client
    refused the subscription in its own thread and the flow said the broker was unreachable."""
    with pytest.raises(argparse.ArgumentTypeError, match="ending in '/'"):
        topic_prefix(prefix)
    assert topic_prefix("") == "" and topic_prefix("tenant-7/site1/") == "tenant-7/site1/"


def test_shems_run_with_a_prefix_missing_its_slash_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--topic-prefix", "site1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and _human_lines(proc.stderr) == [
        "shems run: error: argument --topic-prefix: a topic prefix is topic levels ending in '/' "
        "without + or # (e.g. site1/), got 'site1'"]


def test_a_port_another_process_holds_is_one_line_in_every_subcommand(tmp_path):
    """Every port a command listens on (the viewer's, `shems http`'s, any --metrics-port), held by
    another process: one line naming the port, before any work. Streamlit said so in its own words
    and uvicorn with exit 3; a taken metrics port was a bare OSError, or a viewer that started
    anyway and raised on every page it served."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    cases = []
    try:
        for n, leaf in enumerate(LEAVES):
            options = leaf.options()
            # A store of its own: cases run at once, and two migrating one SQLite file wait on it.
            tail = ["--store-url", f"sqlite:///{tmp_path / f'ports{n}.db'}"] if "--store-url" in options else []
            if "--mqtt-url" in options:
                tail += ["--mqtt-url", UNREACHABLE_BROKER]
            for flag in ("--port", "--metrics-port"):
                if flag in options and options[flag].type is port_type:
                    cases.append(Case(f"{leaf.name} {flag}", [*leaf.base_args(SAMPLE), *tail, flag, str(taken)]))
        assert {c.label for c in cases} >= {"ui --port", "ui --metrics-port", "http --port", "run --metrics-port",
                                            "import --metrics-port", "demo --metrics-port"}
        results = _run_all(cases, tmp_path)
    finally:
        holder.close()
    _assert_one_line(results, exit_code=2)
    for case, proc in results:
        assert str(taken) in _human_lines(proc.stderr)[0], (case.label, proc.stderr)


@pytest.mark.parametrize("address", ["", " ", "999.1.1.1", "no such host", "a/b"])
def test_an_address_no_server_could_listen_on_is_refused(address):
    with pytest.raises(argparse.ArgumentTypeError, match="listen on|address to listen"):
        listen_address(address)
    assert listen_address("127.0.0.1") == "127.0.0.1" and listen_address("localhost") == "localhost"


def test_an_address_of_another_machine_is_one_line(tmp_path):
    """A well-formed address this machine does not have: Streamlit's traceback before."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "ui", "--address", "192.0.2.7",
                           "--store-url", f"sqlite:///{tmp_path / 'v.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _human_lines(proc.stderr) == ["shems: error: cannot listen on 192.0.2.7:8501: Cannot assign requested address"]


def _with_env(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHEMS_") or k.startswith("SHEMS_TEST_")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], env={**environ, **env,
                          "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)


def test_a_bad_value_from_the_environment_names_the_variable():
    """No flag was given, so 'argument --port: ...' alone sends the user looking for one."""
    proc = _with_env(["http"], SHEMS_HTTP_PORT="abc")
    assert proc.returncode == 2 and _human_lines(proc.stderr) == [
        "shems http: error: argument --port: expected a whole number, got 'abc' "
        "(from the environment variable SHEMS_HTTP_PORT)"]
    proc = _with_env(["run", "--qos", "nine"], SHEMS_QOS="1")  # the flag's own value: no variable named
    assert proc.returncode == 2 and "environment" not in proc.stderr and "argument --qos" in proc.stderr


def test_a_switch_from_the_environment_that_is_neither_on_nor_off_is_refused(monkeypatch):
    """SHEMS_NO_INSIGHTS=maybe was read as off, silently."""
    proc = _with_env(["run"], SHEMS_NO_INSIGHTS="maybe")
    assert proc.returncode == 2 and _human_lines(proc.stderr) == [
        "shems run: error: SHEMS_NO_INSIGHTS is one of 1/true/yes/on (on) or 0/false/no/off or empty (off), "
        "got 'maybe'"]
    assert _with_env(["run", "--help"], SHEMS_NO_INSIGHTS="maybe").returncode == 0  # help still helps
    for word, meaning in (("YES", True), ("on", True), ("1", True), ("off", False), ("", False), ("0", False)):
        monkeypatch.setenv("SHEMS_NO_INSIGHTS", word)
        assert build_parser().parse_args(["run"]).no_insights is meaning, word


def test_a_choice_from_the_environment_is_checked_like_the_flags():
    """argparse checks a flag's value against its choices, never a default's: SHEMS_LAYOUT=wid
    imported as the long layout and failed on columns the file was never meant to have."""
    proc = _with_env(["import", str(SAMPLE)], SHEMS_LAYOUT="wid")
    assert proc.returncode == 2 and _human_lines(proc.stderr) == [
        "shems import: error: SHEMS_LAYOUT is one of long, wide, interval, got 'wid' (did you mean wide?)"]
