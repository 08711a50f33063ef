"""The wake-up channel from the policy handlers to the journal reader (issue #22).

journald tells its readers of a new entry 250-500 ms after writing it (its
post-change timer), though the entry is readable at once: a client that sends
the instant its POP3 session ends would find no authorization yet. A handler
that finds none for a relay attempt (decision.awaits_login) sends the reader an
empty datagram, and the reader reads the journal now (reader/follow.py).

Nothing travels but the wake-up: no address, no answer, no reply. The socket is
the reader's, in its RuntimeDirectory (0750, group pbs-activated), itself
writable by that group only (0620), so no local user can reach it; and any
number of datagrams is one wake-up, since the reader drains them all before
it reads.
"""

from __future__ import annotations

import _socket
import contextlib
import posix

from pbs_activated.config import defaults

MODE = 0o620
"""The socket: writable by its group (the services'), by nobody else."""

DRAIN_LIMIT = 4096
"""Datagrams read in one drain at most, so a flood cannot keep the reader from reading."""


def socket_path() -> str:
    """Where the reader listens: $PBS_ACTIVATED_WAKE_SOCKET, else defaults.WAKE_SOCKET."""
    return defaults.environment(defaults.WAKE_SOCKET_ENVIRONMENT) or defaults.WAKE_SOCKET


def wake(path: str) -> None:
    """Send the reader one empty datagram; never block, never fail.

    No reader (stopped, on another host) or a full queue (already woken) is
    not an error: the handler's wait looks at the store either way.
    """
    sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sender.sendto(b"", _socket.MSG_DONTWAIT, path)
    finally:
        sender.close()


class WakeSocket:
    """The reader's end: a bound datagram socket whose readiness means "read the journal now"."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._socket = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            self._socket.setblocking(False)
            with contextlib.suppress(FileNotFoundError):
                posix.unlink(path)  # a previous reader's, killed before it could remove it
            self._socket.bind(path)
            posix.chmod(path, MODE)
        except OSError:
            self._socket.close()
            raise

    def fileno(self) -> int:
        return self._socket.fileno()

    def drain(self) -> int:
        """Read every datagram waiting (they all mean the same); how many there were."""
        count = 0
        while count < DRAIN_LIMIT:
            try:
                self._socket.recv(1)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
        return count

    def close(self) -> None:
        """Close and remove the socket."""
        self._socket.close()
        with contextlib.suppress(OSError):
            posix.unlink(self.path)
