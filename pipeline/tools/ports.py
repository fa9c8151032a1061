"""Whether this machine can listen on an address and port, asked before a server starts."""

from __future__ import annotations

import socket


def listen_problem(address: str, port: int) -> str | None:
    """None when this process can listen on ``address``:``port`` now, else why not, on one line.
    Asked before a server is started (or exec'd): Streamlit and uvicorn report a taken port or an
    address of another machine in their own words, or with a traceback."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            # As the servers bind: a port whose last connections are in TIME_WAIT is free to them.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except (OSError, UnicodeError) as exc:
        return f"cannot listen on {address}:{port}: {getattr(exc, 'strerror', None) or exc}"
    return None
