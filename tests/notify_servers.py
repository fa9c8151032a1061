"""Real local receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP webhook
(http.server in a thread), each on a free port, collecting what arrives."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mail:
    to: list[str]
    subject: str
    text: str


@dataclass
class SmtpSink:
    port: int
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        self.mails.append(Mail(list(envelope.rcpt_tos), str(msg["Subject"]),
                               body.get_content() if body is not None else ""))
        return "250 OK"

    def url(self, to: str = "alice@example.com") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=shems@example.com&to={to}"


@dataclass
class Webhook:
    port: int = 0
    posts: list[dict] = field(default_factory=list)
    status: int = 200  # set to 500 to make it fail

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"


def wait_for(items: list, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while len(items) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return items


@contextmanager
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@contextmanager
def webhook_server() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            if hook.status == 200:
                hook.posts.append({"path": self.path, **payload})
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args):  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
