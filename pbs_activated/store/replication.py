"""A write is done when a replica has it: WAIT, and what to do when too few confirm.

Why: with replication, a master that dies after acknowledging a write but
before any replica copied it takes the write with it, and a login the reader
took for stored is lost at the failover. So the reader's cursor advances only
past writes that `[redis] min_replicas_acknowledged` replicas confirmed.
"""

from __future__ import annotations

from pbs_activated.config import defaults
from pbs_activated.store import ReplicationUnconfirmed

TYPE_CHECKING = False
if TYPE_CHECKING:
    import redis


class Replication:
    """How many replicas must confirm a write, and what the master last told us."""

    __slots__ = ("min_replicas", "timeout", "online", "unconfirmed")

    def __init__(
        self, min_replicas: int | None = None, timeout: float = defaults.REPLICATION_TIMEOUT
    ) -> None:
        self.min_replicas = min_replicas  # None: "auto"
        self.timeout = timeout
        self.online = 0  # replicas the master reported online at the last write
        # The last write the master applied but no replica confirmed, and its reply:
        # when it is sent again, the master answers "nothing to do", yet the
        # caller's answer is the first reply (this login did set the key).
        self.unconfirmed: tuple[tuple[object, ...], object] | None = None

    def required(self, online: int) -> int:
        """Return how many confirmations a write needs when `online` replicas are connected."""
        if self.min_replicas is None:
            return 1 if online else 0
        return self.min_replicas


def confirmed_write(
    client: redis.Redis, replication: Replication, command: tuple[object, ...]
) -> object:
    """Run a write and WAIT for the replicas, in one round trip; return the write's reply.

    WAIT counts the replicas that have every write of *its own connection*, so the
    write, ROLE (how many replicas are online) and WAIT go in one pipeline, which
    redis-py sends on one connection. The number to wait for is what the master
    reported at the previous write; when that falls short of what ROLE now
    reports, the write and WAIT are sent once more with the right number.
    """
    timeout_ms = max(1, int(replication.timeout * 1000))
    result: object = None
    if replication.unconfirmed is not None and replication.unconfirmed[0] == command:
        result = replication.unconfirmed[1]
    replication.unconfirmed = None
    for _ in range(2):
        asked = replication.required(replication.online)
        pipeline = client.pipeline(transaction=False)
        pipeline.execute_command(*command)
        pipeline.execute_command("ROLE")
        pipeline.execute_command("WAIT", asked, timeout_ms)
        reply, role, acknowledged = pipeline.execute()
        result = result or reply
        replication.online = replicas_online(role)
        required = replication.required(replication.online)
        if int(acknowledged) >= required:
            return result
        if asked >= required:
            break
    replication.unconfirmed = (command, result)
    raise ReplicationUnconfirmed(
        f"{acknowledged} of {required} replicas confirmed the write within "
        f"{replication.timeout:g} s ({replication.online} online)"
    )


def replicas_online(role: object) -> int:
    """Return the number of replicas in a master's ROLE reply (only online ones are listed)."""
    if isinstance(role, list | tuple) and len(role) >= 3 and role[0] in ("master", b"master"):
        replicas = role[2]
        return len(replicas) if isinstance(replicas, list | tuple) else 0
    return 0
