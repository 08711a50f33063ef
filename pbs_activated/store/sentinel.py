"""Finding the servers through Redis Sentinel: one policy for the handler and the writers.

Each sentinel in `[redis] sentinels` is asked in turn, with an equal share of
the time left, where the master of `[redis] service` is and which replicas it
knows; the servers it names are then tried in that order, each again with an
equal share, so one host that drops packets cannot use up the whole budget.

The handler only reads, and a replica serves a read as well as the master
does, so it may use any of them (`readable`): lookups go on during a failover
while any server is reachable. A writer must reach the master (`writable`):
a replica answers a write with READONLY, after which the writer asks again.
A server that answers it cannot serve now (loading, a replica without its
master: ServerNotReady) is passed over like one that does not answer.
"""

from __future__ import annotations

import time

from pbs_activated.store import StoreError, StoreRefused, StoreUnavailable, failure, resp, sockets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from pbs_activated.config import RedisSettings

    _Server = TypeVar("_Server")

_UNUSABLE_REPLICA_FLAGS = {b"s_down", b"o_down", b"disconnected"}


def discover(
    settings: RedisSettings,
    deadline: float,
    use: Callable[[str, int, float], _Server],
    master_only: bool,
) -> _Server:
    """Return `use(host, port, deadline)` of the first server the sentinels name that works.

    Raises the failure that says most: a refusal (a wrong password is worth
    an administrator's attention) over anything transient, else the last.
    """
    sentinels = settings.sentinels
    failure: StoreError = StoreUnavailable("no sentinel answered")
    for index, (host, port) in enumerate(sentinels):
        try:
            servers, master_known = ask(
                settings, host, port, share(deadline, len(sentinels) - index)
            )
        except (OSError, ValueError, StoreError) as error:
            failure = _worse(failure, _named(error, f"sentinel {host}:{port}"))
            continue
        if master_only:
            servers = servers[:1] if master_known else []
        if not servers:
            failure = _worse(failure, StoreUnavailable(f"sentinel {host}:{port} knows no master"))
        for position, (server_host, server_port) in enumerate(servers):
            try:
                return use(server_host, server_port, share(deadline, len(servers) - position))
            except (OSError, ValueError, StoreError) as error:
                failure = _worse(failure, _named(error, f"{server_host}:{server_port}"))
        if time.monotonic() >= deadline:
            break
    raise failure


def ask(
    settings: RedisSettings, host: str, port: int, deadline: float
) -> tuple[list[tuple[str, int]], bool]:
    """The servers one sentinel knows, the master first, and whether it knows the master."""
    connection = resp.Connection(*sockets.open_tcp(host, port, deadline, settings), deadline)
    try:
        service = settings.service
        commands: list[tuple[str, ...]] = [
            ("SENTINEL", "get-master-addr-by-name", service),
            ("SENTINEL", "replicas", service),
        ]
        if settings.sentinel_password:
            commands.insert(0, ("AUTH", settings.sentinel_password))
        # One round trip: the sentinel answers in order, and an error reply stops us.
        connection.send(b"".join(resp.encode_command(command) for command in commands))
        replies = [connection.reply() for _ in commands]
    finally:
        connection.close()
    master = replies[-2]
    return servers(master, replies[-1]), isinstance(master, list) and len(master) == 2


def servers(master: object, replicas: object) -> list[tuple[str, int]]:
    """Turn a sentinel's answers into servers to try: the master, then usable replicas.

    `master` is the reply to `SENTINEL get-master-addr-by-name` ([ip, port] or nil);
    `replicas` the reply to `SENTINEL replicas`, one flat name/value list per
    replica. Replicas the sentinel sees as down or disconnected are left out; a
    replica that only lost its master stays in, as it still serves its data.
    """
    found: list[tuple[str, int]] = []
    if isinstance(master, list) and len(master) == 2:
        found.append(_server(master[0], master[1]))
    for entry in replicas if isinstance(replicas, list) else ():
        if not isinstance(entry, list):
            continue
        fields = dict(zip(entry[::2], entry[1::2], strict=False))
        flags = fields.get(b"flags", b"")
        if not isinstance(flags, bytes) or set(flags.split(b",")) & _UNUSABLE_REPLICA_FLAGS:
            continue
        server = _server(fields.get(b"ip"), fields.get(b"port"))
        if server not in found:
            found.append(server)
    return found


def _server(host: object, port: object) -> tuple[str, int]:
    if not isinstance(host, bytes) or not isinstance(port, bytes) or not port.isdigit():
        raise StoreUnavailable(f"sentinel named no server: {host!r}:{port!r}")
    return host.decode("ascii", "replace"), int(port)


def share(deadline: float, attempts_left: int) -> float:
    """Return the deadline of the next of `attempts_left` attempts sharing the time left."""
    now = time.monotonic()
    return now + max(deadline - now, 0.0) / max(attempts_left, 1)


def _named(error: BaseException, where: str) -> StoreError:
    """The typed error, naming the server it came from: with Sentinel there are several."""
    typed = failure(error)
    return type(typed)(f"{where}: {typed}")


def _worse(known: StoreError, new: StoreError) -> StoreError:
    """The failure to report of two: a refusal stays, else the newer one."""
    return known if isinstance(known, StoreRefused) and not isinstance(new, StoreRefused) else new
