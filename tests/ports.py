"""Loopback ports for tests: the one ``free_port`` helper of the suite."""

from __future__ import annotations

import socket


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 (the caller closes it).

    Handing the bound socket to a server (uvicorn's ``sockets=``) avoids the race of
    :func:`free_port`, where another process may take the port before it is used.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port that was free a moment ago (for tools that bind it themselves)."""
    with loopback_socket() as sock:
        return int(sock.getsockname()[1])
