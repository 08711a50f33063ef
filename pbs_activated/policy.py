"""`pbs-activated policy`: answer every policy request on one Postfix connection.

systemd accepts the connection (`Accept=yes`) and starts this with the socket as
stdin and stdout. Postfix keeps the connection for many requests, so we answer
until it closes, or until it has been idle longer than Postfix itself would keep
it (`smtpd_policy_service_max_idle`), and then exit.

Reads and writes go through the file descriptors with `os.read`/`os.write`, so
the same loop serves a socket from systemd and a pipe from an administrator's
shell (`printf 'request=...' | pbs-activated policy`).
"""

from __future__ import annotations

import _socket
import os
import select

from pbs_activated import addresses, audit
from pbs_activated.config import Config, ConfigError, load
from pbs_activated.decision import decide
from pbs_activated.protocol import (
    LimitExceeded,
    RequestParser,
    format_reply,
    rcpt_client_address,
)
from pbs_activated.store import Lookup, StoreUnavailable, set_kernel_timeouts

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from pbs_activated.config import PolicySettings
    from pbs_activated.decision import Decision
    from pbs_activated.protocol import Request

READ_SIZE = 65536


class BrokenConfigLookup:
    """Stands in for Redis when the config cannot be read: every lookup is unavailable.

    The handler still answers, so Postfix does not log a policy-service failure
    for every message, and a relay attempt gets the 4xx of an unavailable lookup
    until the administrator fixes the file.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def user_for(self, address: str) -> str | None:
        raise StoreUnavailable(f"configuration broken: {self.reason}")

    def users_for(self, addresses: list[str]) -> list[str | None]:
        raise StoreUnavailable(f"configuration broken: {self.reason}")

    def prefetch(self, addresses: list[str]) -> None:
        """Nothing to ask."""

    def forget_prefetch(self) -> None:
        """Nothing was asked."""

    def close(self) -> None:
        """Nothing to close."""


def main(config_path: str) -> int:
    """Serve the connection on stdin/stdout; return the exit status."""
    config, lookup = config_and_lookup(config_path)
    try:
        return serve(0, 1, config, lookup)
    finally:
        lookup.close()


def config_and_lookup(config_path: str) -> tuple[Config, Lookup | BrokenConfigLookup]:
    """The config and a lookup on its Redis; for a broken config, defaults and no Redis.

    A broken config is audited and then answered around (see BrokenConfigLookup),
    by the handler and the server alike.
    """
    try:
        config = load(config_path)
        return config, Lookup(config.redis)
    except ConfigError as error:
        audit.send(audit.ERROR, f"cannot use configuration: {error}", PBS_ERROR="config")
        return Config(config_path), BrokenConfigLookup(str(error))


def serve(
    input_fd: int, output_fd: int, config: Config, lookup: Lookup | BrokenConfigLookup
) -> int:
    """Answer requests until EOF (0), idle timeout (0) or a protocol violation (1)."""
    policy = config.policy
    parser = RequestParser(policy.max_line_length, policy.max_request_size)
    poller = None if _time_reads_in_kernel(input_fd, policy.idle_timeout) else select.poll()
    if poller is not None:
        poller.register(input_fd, select.POLLIN)
    idle_ms = int(policy.idle_timeout * 1000)
    while True:
        try:
            if poller is not None and not poller.poll(idle_ms):
                raise BlockingIOError
            chunk = os.read(input_fd, READ_SIZE)
        except BlockingIOError:  # idle: poll() or the socket's SO_RCVTIMEO ran out
            audit.send(audit.INFO, f"idle for {policy.idle_timeout:g} s, closing")
            return 0
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if parser.in_request:
                audit.send(audit.WARNING, "connection closed in the middle of a request")
            return 0
        prefetch(lookup, chunk)
        violation = None
        try:
            requests = parser.feed(chunk)
        except LimitExceeded as error:
            violation, requests = error, error.complete
        if requests and not answer(output_fd, requests, policy, lookup):
            return 0
        if violation is not None:
            # Drop the connection without an answer: resynchronising is guesswork;
            # Postfix logs the closed connection and applies its default_action.
            audit.send(audit.ERROR, f"closing connection: {violation}", PBS_ERROR="limit")
            return 1


def _time_reads_in_kernel(fd: int, seconds: float) -> bool:
    """Give a blocking socket on `fd` an SO_RCVTIMEO of `seconds`; False for anything else.

    Then each read waits for the next request (or the idle timeout) by itself,
    and the handler saves a poll() per request. A pipe, or a socket someone made
    non-blocking, is polled instead.
    """
    try:
        if not os.get_blocking(fd):
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
    lookup: Lookup | BrokenConfigLookup,
) -> bool:
    """Decide, reply to and record each request; False if Postfix has gone away.

    The replies go out before the audit entries are written, so a slow journal
    never delays Postfix's answer.
    """
    decisions = [decide(request, policy, lookup.user_for) for request in requests]
    try:
        write_all(output_fd, b"".join([format_reply(d.action) for d in decisions]))
    except BrokenPipeError:
        return False
    for request, decision in zip(requests, decisions, strict=True):
        record(request, decision)
    lookup.forget_prefetch()
    return True


def prefetch(lookup: Lookup | BrokenConfigLookup, chunk: bytes) -> None:
    """Send the lookup of the RCPT request in `chunk`, if it holds one, before parsing it."""
    address = guessed_address(chunk)
    if address is not None:
        lookup.prefetch([address])


def guessed_address(chunk: bytes) -> str | None:
    """The normalised client address of the one RCPT request in `chunk`, unparsed; or None.

    Only a guess to send the lookup early (handler and server alike): the parsed
    request decides, and a lookup for another address does not use the reply.
    """
    guess = rcpt_client_address(chunk)
    return addresses.normalize_or_none(guess) if guess is not None else None


def write_all(fd: int, data: bytes) -> None:
    """Write every byte; a socket may take a large pipelined answer in pieces."""
    written = os.write(fd, data)  # nearly always all of it
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


def record(request: Request, decision: Decision) -> None:
    """Write the audit entry of one decision."""
    audit.deliver(*audit_entry(request, decision))


def audit_entry(request: Request, decision: Decision) -> tuple[bytes, str]:
    """The encoded journal entry of one decision and its message: INFO at RCPT, DEBUG else."""
    state = request.get("protocol_state")
    priority = audit.INFO if state.upper() == "RCPT" else audit.DEBUG
    who = f" ({decision.user})" if decision.user else ""
    client = decision.client_address or request.get("client_address")[:80]
    message = (
        f"{decision.action} for {client or 'no address'}{who} at {state or 'no state'}: "
        f"{decision.reason}"
    )
    payload = audit.entry(
        priority,
        message,
        PBS_ACTION=decision.action.split(" ", 1)[0],
        PBS_ACTION_TEXT=decision.action,
        PBS_REASON=decision.reason,
        PBS_CLIENT_ADDRESS=client,
        PBS_USER=decision.user,
        PBS_PROTOCOL_STATE=state,
        PBS_SENDER=request.get("sender"),
        PBS_RECIPIENT=request.get("recipient"),
        PBS_QUEUE_ID=request.get("queue_id"),
        PBS_CLIENT_NAME=request.get("client_name"),
        PBS_HELO_NAME=request.get("helo_name"),
        PBS_INSTANCE=request.get("instance"),
    )
    return payload, message
