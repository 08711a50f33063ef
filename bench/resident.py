"""Evaluation only, not shipped: the handler's code serving every connection in one process.

What an `Accept=no` socket would start: systemd passes the listening socket
(fd 3, $LISTEN_FDS=1) and this one process accepts and answers all Postfix
connections with an epoll loop, using the same parser, decisions, Redis lookup
and audit entries as `pbs-activated policy`. It lacks what shipping it would
need (an idle exit, per-connection idle timeouts, Redis lookups that never
stall other connections), so `make bench --resident` only shows what the
design would gain: run as `python3 -I -S bench/resident.py REPO`.
"""

import os
import select
import sys

sys.path.append(sys.argv[1])

from pbs_activated import audit  # noqa: E402
from pbs_activated.config import config_path, load  # noqa: E402
from pbs_activated.decision import decide  # noqa: E402
from pbs_activated.policy import record, write_all  # noqa: E402
from pbs_activated.protocol import LimitExceeded, RequestParser, format_reply  # noqa: E402
from pbs_activated.store import Lookup  # noqa: E402

LISTEN_FD = 3


def main() -> None:
    import _socket

    config = load(config_path())
    policy = config.policy
    lookup = Lookup(config.redis)
    listener = _socket.socket(fileno=LISTEN_FD)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(LISTEN_FD, select.EPOLLIN)
    parsers: dict[int, RequestParser] = {}
    while True:
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
                continue
            decisions = [decide(request, policy, lookup.user_for) for request in requests]
            try:
                write_all(fd, b"".join(format_reply(d.action) for d in decisions))
            except OSError:
                continue
            for request, decision in zip(requests, decisions, strict=True):
                record(request, decision)


if __name__ == "__main__":
    main()
