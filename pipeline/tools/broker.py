"""Start a private Mosquitto when none is reachable (demo, benchmark): loopback only, no auth."""

from __future__ import annotations

import ctypes
import getpass
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import parse_mqtt_url

# Mosquitto silently drops QoS 1 messages for a persistent client whose queue is longer than
# max_queued_messages (1000 by default); a private broker gets the queue settings deploy/mosquitto
# recommends (scripts/ensure_services.sh gives the system broker the same), so nothing is lost
# while the flow restarts or catches up.
QUEUE_SETTINGS = {"max_queued_messages": "6000000", "max_queued_bytes": "0"}

_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence {persistence}
persistence_location {dir}/
max_inflight_messages 0
log_dest file {dir}/mosquitto.log
user {user}
""" + "".join(f"{key} {value}\n" for key, value in QUEUE_SETTINGS.items())


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@dataclass
class PrivateBroker:
    """A Mosquitto child process; use as a context manager or call stop()."""

    port: int
    process: subprocess.Popen
    workdir: tempfile.TemporaryDirectory

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.workdir.cleanup()

    def __enter__(self) -> PrivateBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> Callable[[], None]:
    """What the broker's process runs before it execs: Linux then sends it SIGTERM when the
    process that started it dies, by a signal too (a killed `shems bench drain` left its broker
    holding a port and a temporary folder). libc is looked up here, in the parent: between fork
    and exec a child of a threaded process must not take the loader's lock."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_private_broker(port: int | None = None, persistence: bool = False,
                         unlimited_queues: bool = False) -> PrivateBroker:
    """``unlimited_queues``: no bound at all on a session's queue (``shems bench drain`` queues a
    whole backlog for offline sessions), instead of deploy's large one."""
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError(
            "no MQTT broker is reachable and mosquitto is not installed: "
            "run `make demo` (it installs it) or `apt-get install mosquitto`"
        )
    port = port or free_port()
    workdir = tempfile.TemporaryDirectory(prefix="shems-mosquitto-")
    conf = Path(workdir.name) / "mosquitto.conf"
    # As its owner: a broker started by root would otherwise switch to the mosquitto user, and
    # Linux forgets the parent-death signal (_stop_with_parent) on that switch.
    text = _CONF.format(port=port, dir=workdir.name, persistence="true" if persistence else "false",
                        user=getpass.getuser())
    if unlimited_queues:
        text = text.replace(f"max_queued_messages {QUEUE_SETTINGS['max_queued_messages']}",
                            "max_queued_messages 0")
    conf.write_text(text)
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_stop_with_parent())
    deadline = time.monotonic() + 10
    while not reachable("127.0.0.1", port, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (Path(workdir.name) / "mosquitto.log")
            detail = log.read_text()[-2000:] if log.exists() else ""
            workdir.cleanup()
            raise RuntimeError(f"mosquitto did not start on port {port}: {detail}")
        time.sleep(0.05)
    return PrivateBroker(port, proc, workdir)


def ensure_broker(url: str) -> tuple[str, PrivateBroker | None]:
    """The URL itself when its broker answers, else a private broker's URL (and the broker)."""
    endpoint = parse_mqtt_url(url)
    if reachable(endpoint.host, endpoint.port):
        return url, None
    broker = start_private_broker(persistence=True)
    return broker.url, broker
