"""Prometheus metrics of the viewer's server, served on ``shems ui --metrics-port``.

Streamlit runs the app script once per interaction in one server process, so the HTTP endpoint
is started once per process, by whichever session runs first. Labels stay bounded: page titles,
results; never a user name or a home id.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Histogram, start_http_server

from pipeline.logs import get_logger

PAGE_SECONDS = Histogram(
    "shems_viewer_page_seconds", "Time to run one page of the viewer (a render or a refresh)",
    ["page"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
SIGNINS = Counter("shems_viewer_signins_total", "Sign-in attempts by result", ["result"])
COMMANDS = Counter("shems_viewer_commands_total", "Device commands by result", ["result"])

_started: set[int] = set()
_lock = threading.Lock()


def serve_once(port: int | None) -> None:
    """Start the metrics endpoint on ``port`` unless this process already has."""
    if not port:
        return
    with _lock:
        if port in _started:
            return
        # Tried once per process either way: a port another process took since `shems ui`
        # checked it is a line in the log, never an error on every page a user opens.
        _started.add(port)
        try:
            start_http_server(port, addr="0.0.0.0")
        except OSError as exc:
            get_logger("shems.viewer").error("metrics_not_served", port=port, reason=exc.strerror or str(exc))
