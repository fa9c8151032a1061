"""`shems ui` as a child process on a free port, for the browser and CLI tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ViewerServer:
    def __init__(self, store_url: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = dict(env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ROOT / "tests" / "artifacts" / f"viewer-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "ui", "--store-url", store_url,
                 "--port", str(self.port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1"))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shems ui exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"shems ui not healthy after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
