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

from pbs_activated import audit, wakeup
from pbs_activated.answer import LimitExceeded, RequestParser, service
from pbs_activated.answer.decision import lookup_address
from pbs_activated.answer.listening import NoListeningSocket, listening_socket
from pbs_activated.answer.loginwait import Waits
from pbs_activated.answer.rounds import UserFor, looked_up
from pbs_activated.config.load import config_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbs_activated.answer import Request

READ_SIZE = 65536


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


class Connection:
    """One Postfix connection: its descriptor, the parser of what it sends, its login waits."""

    __slots__ = ("fd", "parser", "waited")

    def __init__(self, fd: int, parser: RequestParser) -> None:
        self.fd = fd
        self.parser = parser
        self.waited: dict[str, int | None] = {}


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
        self.waits = Waits()
        """Connections held while a login may be on its way (loginwait.py); not read meanwhile."""
        self.wake_path = wakeup.socket_path()

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
            look = self.waits.timeout(now)
            ready = []
            for fd, events in self.poller.poll(wait if look is None else min(wait, look)):
                if fd == self.listener.fileno():
                    self._accept()
                elif fd not in self.waits.held:
                    ready.append(fd)
                elif events & (select.EPOLLHUP | select.EPOLLERR):
                    self._close(fd)  # Postfix gave up on a held connection
            if ready:
                self._serve(ready)
            if self.waits.held:
                self._look()

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
        return looked_up(self.lookup, sorted({a for r in requests if (a := lookup_address(r))}))

    def _look(self) -> None:
        """Look up the held connections' addresses that are due, at once; resume the settled."""
        now = time.monotonic()
        due = self.waits.due(now)
        if not due:
            return
        wanted = sorted({self.waits.held[fd].address for fd in due})
        user_for = looked_up(self.lookup, wanted)
        authorized = None if user_for.failure else {a for a, u in user_for.users.items() if u}
        for fd, held, waited_ms in self.waits.settle(due, authorized, now):
            connection = self.connections[fd]
            connection.waited[held.address] = waited_ms
            self.poller.modify(fd, select.EPOLLIN)
            if not self._answer(connection, held.requests, user_for):
                self._close(fd)
        if self.waits.held:
            wakeup.wake(self.wake_path)
        self._deliver_held()

    def _answer(self, connection: Connection, requests: list[Request], user_for: UserFor) -> bool:
        """Decide and reply to one connection's requests; False if it cannot take the reply.

        A relay attempt that may await a login on its way holds the connection
        (and its requests from that one on) in `waits`, unread, and wakes the
        reader; `_look` resumes it.
        """
        replies, decisions, awaited = service.answer(
            requests, self.policy, user_for, connection.waited
        )
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
        self.held += service.entries(requests[: len(decisions)], decisions)
        if awaited is not None:
            rest = requests[len(decisions) :]
            self.waits.hold(connection.fd, awaited, rest, self.policy.login_wait)
            self.poller.modify(connection.fd, 0)
            wakeup.wake(self.wake_path)
        return True

    def _close(self, fd: int, message: str = "", priority: int = audit.INFO) -> None:
        if message:
            audit.send(priority, message)
        self.poller.unregister(fd)
        os.close(fd)
        self.waits.release(fd)
        del self.connections[fd]
        self.last_active.pop(fd, None)
        if not self.connections:
            self.idle_since = time.monotonic()
        if not self.accepting:  # a descriptor is free again
            self.poller.modify(self.listener.fileno(), select.EPOLLIN)
            self.accepting = True
