"""Evaluation only, not shipped: the handler's code serving every connection in one process.

What an `Accept=no` socket would start: systemd passes the listening socket
(fd 3, $LISTEN_FDS=1) and this one process accepts and answers all Postfix
connections with an epoll loop, using the same parser, decisions, Redis lookup
and audit entries as `pbs-activated policy`. It lacks what shipping it would
need (an idle exit, per-connection idle timeouts, Redis lookups that never
stall other connections), so `bench/run.py --resident` only shows what the
design would gain: run as `python3 -I -S bench/resident.py REPO [--batch]`.

With --batch, the requests of every connection that is ready at once are
looked up together, with one MGET (one Redis round trip for all of them)
instead of one GET each; written against Lookup's internals, as a measurement.
"""

import os
import select
import sys

sys.path.append(sys.argv[1])

from pbs_activated import addresses, audit  # noqa: E402
from pbs_activated.config import config_path, load  # noqa: E402
from pbs_activated.decision import decide  # noqa: E402
from pbs_activated.policy import record, write_all  # noqa: E402
from pbs_activated.protocol import LimitExceeded, RequestParser, format_reply  # noqa: E402
from pbs_activated.store import Lookup, StoreUnavailable, client_key  # noqa: E402

LISTEN_FD = 3


class BatchLookup(Lookup):
    """Lookup plus `prefetch`: many addresses in one MGET, then `user_for` answers from it."""

    def prefetch(self, wanted: list[str]) -> None:
        self.users: dict[str, str | None] | StoreUnavailable = {}
        if not wanted:
            return
        import time

        self._deadline = time.monotonic() + self.settings.timeout
        try:
            if self._socket is None:
                self._connect()
            values = self._command("MGET", *(client_key(address) for address in wanted))
        except (OSError, ValueError, StoreUnavailable) as error:
            self.close()
            self.users = StoreUnavailable(str(error))
            return
        assert isinstance(values, list)
        self.users = {
            address: value.decode("utf-8", "replace") if isinstance(value, bytes) else None
            for address, value in zip(wanted, values, strict=True)
        }

    def user_for(self, address: str) -> str | None:
        if isinstance(self.users, StoreUnavailable):
            raise self.users
        return self.users[address]


def looked_up(request: object) -> str | None:
    """The normalised address `decide` will look up for this request, if any."""
    get = request.get  # type: ignore[attr-defined]
    if request.malformed or get("request") != "smtpd_access_policy":  # type: ignore[attr-defined]
        return None
    if get("protocol_state").upper() != "RCPT":
        return None
    try:
        return addresses.normalize(get("client_address"))
    except addresses.InvalidAddress:
        return None


def main() -> None:
    import _socket

    batch = "--batch" in sys.argv[2:]
    config = load(config_path())
    policy = config.policy
    lookup = BatchLookup(config.redis) if batch else Lookup(config.redis)
    listener = _socket.socket(fileno=LISTEN_FD)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(LISTEN_FD, select.EPOLLIN)
    parsers: dict[int, RequestParser] = {}
    while True:
        ready = []
        for fd, _ in poller.poll():
            if fd == LISTEN_FD:
                while True:
                    try:
                        connection, _ = listener._accept()
                    except BlockingIOError:
                        break
                    parsers[connection] = RequestParser(
                        policy.max_line_length, policy.max_request_size
                    )
                    poller.register(connection, select.EPOLLIN)
                continue
            try:
                chunk = os.read(fd, 65536)
                requests = parsers[fd].feed(chunk) if chunk else None
            except (ConnectionResetError, LimitExceeded) as error:
                audit.send(audit.ERROR, f"closing connection: {error}")
                requests = None
            if requests is None:
                poller.unregister(fd)
                os.close(fd)
                del parsers[fd]
            elif requests:
                ready.append((fd, requests))
        if batch:
            wanted = {looked_up(r) for _, requests in ready for r in requests} - {None}
            lookup.prefetch(sorted(wanted))  # type: ignore[attr-defined, type-var]
        for fd, requests in ready:
            decisions = [decide(request, policy, lookup.user_for) for request in requests]
            try:
                write_all(fd, b"".join(format_reply(d.action) for d in decisions))
            except OSError:
                continue
            for request, decision in zip(requests, decisions, strict=True):
                record(request, decision)


if __name__ == "__main__":
    main()
