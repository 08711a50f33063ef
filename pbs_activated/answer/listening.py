"""The listening socket systemd passes an Accept=no service (sd_listen_fds(3)).

The policy server (server.py) is started by pbs-policy-server.socket with the
socket itself, not a connection: checked here, so that a unit started any
other way says why it cannot serve instead of failing at its first accept.
"""

from __future__ import annotations

import _socket

LISTEN_FDS_START = 3
"""sd_listen_fds(3): the first socket systemd passes."""


class NoListeningSocket(Exception):
    """Started without the listening socket systemd passes to an Accept=no service."""


def listening_socket(environment: dict[str, str], pid: int) -> _socket.socket:
    """The one listening socket passed by systemd (sd_listen_fds), non-blocking."""
    if environment.get("LISTEN_PID") != str(pid) or not environment.get("LISTEN_FDS"):
        raise NoListeningSocket(
            "no socket passed by systemd; run it from pbs-policy-server.socket (Accept=no)"
        )
    if environment["LISTEN_FDS"] != "1":
        count = environment["LISTEN_FDS"]
        raise NoListeningSocket(f"expected one socket from systemd, got {count}")
    try:
        listener = _socket.socket(fileno=LISTEN_FDS_START)
    except OSError as error:
        raise NoListeningSocket(f"fd {LISTEN_FDS_START} is not a socket: {error}") from None
    if not listener.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
        listener.detach()
        raise NoListeningSocket(
            "the socket from systemd is a connection, not a listening socket: "
            "the socket unit needs Accept=no"
        )
    listener.setblocking(False)
    return listener
