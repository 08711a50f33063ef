"""`pbs-activated policy`: answer every policy request on one Postfix connection.

systemd accepts the connection (`Accept=yes`) and starts this with the socket as
stdin and stdout. Postfix keeps the connection for many requests, so we answer
until it closes, or until it has been idle longer than Postfix itself would keep
it (`smtpd_policy_service_max_idle`), and then exit.

Reads and writes go through the file descriptors with `posix.read`/`posix.write`, so
the same loop serves a socket from systemd and a pipe from an administrator's
shell (`printf 'request=...' | pbs-activated policy`).
"""

from __future__ import annotations

import _socket
import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)

from pbs_activated import audit
from pbs_activated.answer import LimitExceeded, RequestParser, service
from pbs_activated.config.load import config_path
from pbs_activated.store.resp import set_kernel_timeouts

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    import select

    from pbs_activated.answer import Request
    from pbs_activated.config import PolicySettings
    from pbs_activated.store.lookup import Lookups

READ_SIZE = 65536


def main(path: str | None = None) -> int:
    """Serve the connection on stdin/stdout; return the exit status.

    `path` is the --config option; the units (through the launcher) give none.
    """
    configured = service.Configured(config_path(path))
    try:
        return serve(0, 1, configured)
    finally:
        configured.close()


def serve(input_fd: int, output_fd: int, configured: service.Configured) -> int:
    """Answer requests until EOF (0), idle timeout (0) or a protocol violation (1).

    The idle timeout is the one the connection started with; every other
    setting follows the file from one request to the next (service.Configured).
    """
    policy = configured.config.policy
    parser = RequestParser(policy.max_line_length, policy.max_request_size)
    poller = None if _time_reads_in_kernel(input_fd, policy.idle_timeout) else _poller(input_fd)
    idle_ms = int(policy.idle_timeout * 1000)
    waited: dict[str, int | None] = {}
    """Addresses this connection has waited for a login for (service.answer)."""
    configured.lookup.connect()  # Redis logs us in while Postfix's first request is read
    while True:
        try:
            if poller is not None and not poller.poll(idle_ms):
                raise BlockingIOError
            chunk = posix.read(input_fd, READ_SIZE)
        except BlockingIOError:  # idle: poll() or the socket's SO_RCVTIMEO ran out
            audit.send(audit.INFO, f"idle for {policy.idle_timeout:g} s, closing")
            return 0
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if parser.in_request:
                audit.send(audit.WARNING, "connection closed in the middle of a request")
            return 0
        if configured.refresh():
            parser.max_line_length = configured.config.policy.max_line_length
            parser.max_request_size = configured.config.policy.max_request_size
        lookup = configured.lookup
        service.prefetch(lookup, [chunk])
        violation = None
        try:
            requests = parser.feed(chunk)
        except LimitExceeded as error:
            violation, requests = error, error.complete
        settings = configured.config.policy
        if requests and not answer(output_fd, requests, settings, lookup, waited):
            return 0
        if violation is not None:
            # Drop the connection without an answer: resynchronising is guesswork;
            # Postfix logs the closed connection and applies its default_action.
            audit.send(audit.ERROR, f"closing connection: {violation}", PBS_ERROR="limit")
            return 1


def _poller(fd: int) -> select.poll:
    """A poll() on `fd`, for a pipe or a non-blocking socket; `select` is imported only then
    (a Postfix connection is a blocking socket: see _time_reads_in_kernel)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


def _time_reads_in_kernel(fd: int, seconds: float) -> bool:
    """Give a blocking socket on `fd` an SO_RCVTIMEO of `seconds`; False for anything else.

    Then each read waits for the next request (or the idle timeout) by itself,
    and the handler saves a poll() per request. A pipe, or a socket someone made
    non-blocking, is polled instead.
    """
    try:
        if not posix.get_blocking(fd):
            return False
        sock = _socket.socket(fileno=fd)
    except OSError:  # not a socket
        return False
    try:
        set_kernel_timeouts(sock, seconds, _socket.SO_RCVTIMEO)
    except OSError:
        return False
    finally:
        sock.detach()  # fd stays open: it is the connection
    return True


def answer(
    output_fd: int,
    requests: list[Request],
    policy: PolicySettings,
    lookup: Lookups,
    waited: dict[str, int | None],
) -> bool:
    """Decide, reply to and record each request; False if Postfix has gone away.

    The replies go out before the audit entries are written, so a slow journal
    never delays Postfix's answer. A relay attempt that may await a login on
    its way is answered after a bounded wait for it (loginwait.py, imported
    only then: most connections never wait).
    """
    while True:
        replies, decisions, awaited = service.answer(requests, policy, lookup.user_for, waited)
        try:
            write_all(output_fd, replies)
        except BrokenPipeError:
            return False
        answered, requests = requests[: len(decisions)], requests[len(decisions) :]
        for payload, message in service.entries(answered, decisions):
            audit.deliver(payload, message)
        if awaited is None:
            break
        from pbs_activated import wakeup
        from pbs_activated.answer import loginwait

        waited[awaited] = loginwait.wait_for(
            awaited, lookup.user_for, policy.login_wait, wakeup.socket_path()
        )
    lookup.forget_prefetch()
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write every byte; a socket may take a large pipelined answer in pieces."""
    written = posix.write(fd, data)  # nearly always all of it
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = posix.write(fd, view)
        view = view[written:]
