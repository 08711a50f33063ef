"""`pbs-activated policy-server`: every Postfix connection in one process (Accept=no).

A site whose Postfix sends thousands of policy requests a second can switch from
`pbs-policy.socket` (Accept=yes, a handler per connection) to
`pbs-policy-server.socket`: systemd hands this process the listening socket,
and it serves every connection with the handler's parser, decisions and audit
entries (service.py). Serving many at once lets it do two things a handler
cannot, where its throughput comes from (docs/performance.md):

- the requests that arrive together are looked up together, one MGET for all;
- their audit entries go to journald after every answer has been written, so
  no connection waits for another's journal entry.

Redis is asked synchronously, bounded by `[redis] timeout` like the handler (a
hung Redis delays every connection, as it delays the handlers; a request that
arrives meanwhile is answered within twice the timeout). Connections idle longer
than `[policy] idle_timeout` are closed, and the process exits once it has had
none for that long; systemd starts it again at the next.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import sys
import time

from pbs_activated import audit, service
from pbs_activated.config import config_path
from pbs_activated.decision import lookup_address
from pbs_activated.errors import StoreError
from pbs_activated.protocol import LimitExceeded, RequestParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbs_activated.lookup import Lookups
    from pbs_activated.protocol import Request

LISTEN_FDS_START = 3
"""sd_listen_fds(3): the first socket systemd passes."""

READ_SIZE = 65536


class NoListeningSocket(Exception):
    """Started without the listening socket systemd passes to an Accept=no service."""


def main(path: str | None = None) -> int:
    """Serve the socket systemd passed until idle; return the exit status (`path`: --config)."""
    try:
        listener = listening_socket(dict(os.environ), os.getpid())
    except NoListeningSocket as error:
        print(f"pbs-activated: policy-server: {error}", file=sys.stderr)
        return 2
    configured = service.Configured(config_path(path))
    try:
        Server(listener, configured).run()
        return 0
    finally:
        configured.close()


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


class Connection:
    """One Postfix connection: its descriptor and the parser of what it sends."""

    __slots__ = ("fd", "parser")

    def __init__(self, fd: int, parser: RequestParser) -> None:
        self.fd = fd
        self.parser = parser


class Server:
    """The epoll loop: accept, read what is ready, answer it all, audit it all, repeat."""

    def __init__(self, listener: _socket.socket, configured: service.Configured) -> None:
        self.listener = listener
        self.configured = configured
        self.policy = configured.config.policy
        """The answers and limits of the file as last read; the idle timeout is the start's."""
        self.lookup = configured.lookup
        self.poller = select.epoll()
        self.poller.register(listener.fileno(), select.EPOLLIN)
        self.connections: dict[int, Connection] = {}
        self.last_active: dict[int, float] = {}
        """fd -> when its connection last sent something, oldest first (re-inserted on use)."""
        self.idle_since = time.monotonic()
        """When the last connection closed (or the start): the server's own idle clock."""
        self.held: list[tuple[bytes, str]] = []
        """Audit entries of this round, delivered after its answers."""
        self.accepting = True

    def run(self) -> None:
        """Serve until there has been no connection for `idle_timeout`."""
        idle_timeout = self.policy.idle_timeout
        while True:
            now = time.monotonic()
            if self.last_active:
                oldest = next(iter(self.last_active.items()))
                if now - oldest[1] >= idle_timeout:
                    self._close(oldest[0], f"idle for {idle_timeout:g} s, closing", audit.INFO)
                    continue
                wait = oldest[1] + idle_timeout - now
            else:
                if now - self.idle_since >= idle_timeout:
                    return
                wait = self.idle_since + idle_timeout - now
            ready = []
            for fd, _ in self.poller.poll(wait):
                if fd == self.listener.fileno():
                    self._accept()
                else:
                    ready.append(fd)
            if ready:
                self._serve(ready)

    def _accept(self) -> None:
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as error:
                # Out of descriptors: stop accepting (the level-triggered listener
                # would wake us for nothing) until a connection closes.
                audit.send(audit.ERROR, f"cannot accept a connection: {error}", PBS_ERROR="accept")
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.poller.modify(self.listener.fileno(), 0)
                    self.accepting = False
                return
            os.set_blocking(fd, False)  # see _answer
            policy = self.policy
            self.connections[fd] = Connection(
                fd, RequestParser(policy.max_line_length, policy.max_request_size)
            )
            self.last_active[fd] = time.monotonic()
            self.poller.register(fd, select.EPOLLIN)

    def _serve(self, ready: list[int]) -> None:
        """Read every ready connection, look their addresses up at once, answer, audit.

        The lookup is sent before the chunks are parsed (`prefetch`), so that
        Redis answers while we parse; the parsed requests decide.
        """
        chunks = self._read(ready)
        if self.configured.refresh():  # the file changed: every answer from now follows it
            self.policy, self.lookup = self.configured.config.policy, self.configured.lookup
        service.prefetch(self.lookup, [chunk for _, chunk in chunks])
        batch: list[tuple[Connection, list[Request], LimitExceeded | None]] = []
        for connection, chunk in chunks:
            try:
                batch.append((connection, connection.parser.feed(chunk), None))
            except LimitExceeded as error:
                batch.append((connection, error.complete, error))
        user_for = self._prefetched([request for _, requests, _ in batch for request in requests])
        for connection, requests, violation in batch:
            if requests and not self._answer(connection, requests, user_for):
                self._close(connection.fd)
                continue
            if violation is not None:
                closing = f"closing connection: {violation}"
                self.held.append(service.problem(audit.ERROR, closing, PBS_ERROR="limit"))
                self._close(connection.fd)
        self.lookup.forget_prefetch()
        self._deliver_held()

    def _deliver_held(self) -> None:
        """Send the round's audit entries; a full journald costs the round one wait, not one each.

        A handler waits for its own entries only; here every connection waits
        for the round, so once journald's queue stays full the rest of the
        round's entries go to stderr at once (still the journal, less structured).
        """
        wait = True
        for payload, message in self.held:
            if not audit.deliver(payload, message, wait):
                wait = False
        self.held.clear()

    def _read(self, ready: list[int]) -> list[tuple[Connection, bytes]]:
        """What each ready connection sent; a connection at its end is closed."""
        now = time.monotonic()
        chunks = []
        for fd in ready:
            connection = self.connections[fd]
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:  # woken for nothing after all
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if connection.parser.in_request:
                    closed = "connection closed in the middle of a request"
                    self.held.append(service.problem(audit.WARNING, closed))
                self._close(fd)
                continue
            del self.last_active[fd]
            self.last_active[fd] = now
            chunks.append((connection, chunk))
        return chunks

    def _prefetched(self, requests: list[Request]) -> UserFor:
        """Look up at once every address these requests need; a lookup function for decide."""
        wanted = sorted({address for r in requests if (address := lookup_address(r))})
        if not wanted:
            return UserFor(self.lookup, {}, None)
        try:
            if len(wanted) == 1:  # a GET's reply is read faster than MGET's
                users = {wanted[0]: self.lookup.user_for(wanted[0])}
            else:
                users = dict(zip(wanted, self.lookup.users_for(wanted), strict=True))
        except StoreError as error:
            return UserFor(self.lookup, {}, error)
        return UserFor(self.lookup, users, None)

    def _answer(self, connection: Connection, requests: list[Request], user_for: UserFor) -> bool:
        """Decide and reply to one connection's requests; False if it cannot take the reply."""
        replies, decisions = service.answer(requests, self.policy, user_for)
        try:
            written = os.write(connection.fd, replies)
        except BlockingIOError:
            written = 0
        except OSError:  # gone
            return False
        if written < len(replies):
            # Postfix reads each answer before it sends the next request, so a
            # connection whose buffer is full of unread answers is not Postfix:
            # drop it rather than let it hold up every other connection.
            unread = "closing connection: it does not read its answers"
            self.held.append(service.problem(audit.ERROR, unread, PBS_ERROR="unread"))
            return False
        self.held += service.entries(requests, decisions)
        return True

    def _close(self, fd: int, message: str = "", priority: int = audit.INFO) -> None:
        if message:
            audit.send(priority, message)
        self.poller.unregister(fd)
        os.close(fd)
        del self.connections[fd]
        self.last_active.pop(fd, None)
        if not self.connections:
            self.idle_since = time.monotonic()
        if not self.accepting:  # a descriptor is free again
            self.poller.modify(self.listener.fileno(), select.EPOLLIN)
            self.accepting = True


class UserFor:
    """`user_for` for decide, answered from one round's lookup (GET or MGET).

    An address the round did not fetch is looked up on its own, and a failed
    MGET is the failure of every lookup of the round: the requests get the
    unavailable answer, and the next round connects again.
    """

    __slots__ = ("lookup", "users", "failure")

    def __init__(
        self, lookup: Lookups, users: dict[str, str | None], failure: StoreError | None
    ) -> None:
        self.lookup = lookup
        self.users = users
        self.failure = failure

    def __call__(self, address: str) -> str | None:
        if self.failure is not None:
            raise self.failure
        if address in self.users:
            return self.users[address]
        return self.lookup.user_for(address)
