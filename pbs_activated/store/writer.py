"""The writers' side of the store: the reader and the CLI, through redis-py.

They are long-lived or rare, so redis-py's import is affordable here and never
on the handler's path. Every write waits until a replica has it (`WAIT`), so
that a failover loses no login (replication.py). Every failure comes out as
one of the store's typed errors (store/__init__.py), whatever redis-py called
it, so that callers decide by type: wait and retry, try the next server, or
report a refusal.
"""

from __future__ import annotations

import time

from pbs_activated.store import StoreUnavailable, keys, sentinel, sockets
from pbs_activated.store.redisclient import client_for, translated
from pbs_activated.store.replication import Replication, confirmed_write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    import redis

    from pbs_activated.config import RedisSettings

    _Result = TypeVar("_Result")

AUTHORIZE = """
if redis.call('EXISTS', ARGV[3]) == 1 then
  return -1
end
local current = redis.call('PEXPIRETIME', KEYS[1])
if current == -1 then
  return 0
end
if current >= tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[1], current)
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""
"""Set the key unless the user is denied, or it already lasts as long or longer (or forever).

KEYS[1] is the authorization; ARGV[3] the user's deny key (keys.deny_key),
checked in the same atomic step, so no login taken after `deny` returned can
authorize, on whichever host the reader runs. The deny key is an argument, not
a declared key: Redis checks EVAL's declared keys for write access, and the
reader may only read deny keys (acl.py), or it could lift one with a SET; the
EXISTS inside is checked for what it is, a read. Returns 1 (set), 0 (kept) or
-1 (denied).

Atomic on the server, so two POP hosts, or a replayed old login racing a new one,
can only ever lengthen an authorization. PEXPIRETIME needs Redis 7 (bookworm has 7.0).
When the key already lasts longer, it is written again unchanged (PEXPIREAT to
its own expiry): a re-sent write still replicates, so WAIT confirms that the
replicas hold the key, and not merely that this connection had nothing to send.
"""


GRANTED = "granted"
KEPT = "kept"
DENIED = "denied"
"""What an authorize did: set the key, kept a longer one, or refused a denied user."""

_OUTCOMES = {1: GRANTED, 0: KEPT, -1: DENIED}


REVOKE_IF_USER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Delete an authorization only if it still names this user (`revoke --user`)."""


class Writer:
    """A redis-py client for the master, and what the master said of its replicas.

    With Sentinel, the master is found as the handler finds its servers
    (sentinel.discover), and found again after any failure: a failover moves it.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.replication = Replication(settings.min_replicas, settings.replication_timeout)
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        """The redis-py client, connected to the master (found again after a failure)."""
        if self._client is None:
            self._client = self._run_connect()
        return self._client

    def command(self, *arguments: object) -> object:
        """Send one command as it is (INFO, TIME: what doctor asks); failures typed."""
        return self._run(lambda client: client.execute_command(*arguments))

    def ping(self) -> None:
        """Raise a StoreError unless the master answers."""
        self._run(lambda client: client.ping())

    def authorize(self, address: str, user: str, expires_at_ms: int) -> bool:
        """Authorize `address` until `expires_at_ms` (Unix ms); False if it already lasts longer.

        Returns only once the write is safe from a failover (see replication.py);
        raises a StoreError otherwise, and the caller must send it again, which
        is harmless: the same login gives the same PXAT. Sent again after
        ReplicationUnconfirmed, it returns what the unconfirmed attempt did.
        """
        return self.authorize_login(address, user, expires_at_ms) == GRANTED

    def authorize_login(self, address: str, user: str, expires_at_ms: int) -> str:
        """As `authorize`, saying which: GRANTED, KEPT, or DENIED (the user is denied)."""
        command = (
            "EVAL",
            AUTHORIZE,
            1,
            keys.client_key(address),
            user,
            str(expires_at_ms),
            keys.deny_key(user),
        )
        reply = self._run(lambda client: confirmed_write(client, self.replication, command))
        return _OUTCOMES.get(int(reply), KEPT)  # type: ignore[call-overload]

    def revoke(self, address: str) -> bool:
        """Remove an authorization; False if there was none. Confirmed as authorize is."""
        command = ("DEL", keys.client_key(address))
        return bool(self._run(lambda client: confirmed_write(client, self.replication, command)))

    def revoke_user(self, user: str) -> list[str]:
        """Remove every authorization of `user`; return their addresses, by address.

        Each is removed only while it still names `user` (a login of someone
        else from the same address since the listing is left alone), and every
        removal is confirmed as authorize is.
        """
        removed = []
        for address, holder, _ in self.authorizations():
            if holder != user:
                continue
            if self._confirmed(("EVAL", REVOKE_IF_USER, 1, keys.client_key(address), user)):
                removed.append(address)
        return removed

    def deny(self, user: str) -> bool:
        """Deny `user`'s logins until `allow`; False if they already were. Confirmed."""
        command = ("SET", keys.deny_key(user), str(keys.now_ms() // 1000), "NX")
        return bool(self._run(lambda client: confirmed_write(client, self.replication, command)))

    def allow(self, user: str) -> bool:
        """Lift a deny; False if the user was not denied. Confirmed."""
        command = ("DEL", keys.deny_key(user))
        return bool(self._run(lambda client: confirmed_write(client, self.replication, command)))

    def denied(self) -> list[tuple[str, int]]:
        """(user, denied since in Unix seconds) of every denied user, by user."""
        return self._run(_denied)

    def authorizations(self) -> list[tuple[str, str, int]]:
        """(address, user, expiry in Unix ms, -1 for none) of every authorization, by address.

        The absolute expiry (PEXPIRETIME) is what a write needs to copy one to
        another store unchanged (`migrate`); `list_authorized` turns it into
        seconds left.
        """
        return self._run(_authorizations)

    def list_authorized(self) -> list[tuple[str, str, float]]:
        """(address, user, seconds left) for every authorization, by address."""
        now = keys.now_ms()
        return [
            (address, user, (expires_ms - now) / 1000 if expires_ms >= 0 else float("inf"))
            for address, user, expires_ms in self.authorizations()
        ]

    def _confirmed(self, command: tuple[object, ...]) -> object:
        """Run a write confirmed as authorize's is (replication.confirmed_write)."""
        return self._run(lambda client: confirmed_write(client, self.replication, command))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def _run(self, operation: Callable[[redis.Redis], _Result]) -> _Result:
        """Run an operation on the client; a failure comes out typed, and a broken
        or misdirected connection is dropped so that the next call finds the master."""
        import redis as redis_py

        try:
            return operation(self.client)
        except redis_py.RedisError as error:
            typed = translated(error)
            if isinstance(typed, StoreUnavailable):
                self.close()
            raise typed from error

    def _run_connect(self) -> redis.Redis:
        settings = self.settings
        deadline = time.monotonic() + settings.timeout
        if settings.sentinels:
            return sentinel.discover(settings, deadline, self._tcp, master_only=True)
        if settings.unix_path:
            return client_for(settings, unix_socket_path=settings.unix_path)
        return self._tcp(settings.host, settings.port, deadline)

    def _tcp(self, host: str, port: int, deadline: float) -> redis.Redis:
        """A client for a server over TCP: the url's, or the master a sentinel named.

        It connects at its first command, within `[redis] timeout` of its own.
        """
        return client_for(self.settings, host=host, port=port, **sockets.tls_options(self.settings))


def _authorizations(client: redis.Redis) -> list[tuple[str, str, int]]:
    found = sorted(client.scan_iter(match=keys.CLIENT_PATTERN, count=1000))
    if not found:
        return []
    pipeline = client.pipeline(transaction=False)
    for key in found:
        pipeline.get(key)
        pipeline.execute_command("PEXPIRETIME", key)
    replies = pipeline.execute()
    entries = []
    for index, key in enumerate(found):
        user, expires_ms = replies[2 * index], int(replies[2 * index + 1])
        if user is not None and expires_ms != -2:  # -2: expired since the SCAN
            entries.append((keys.address_of(key), user, expires_ms))
    return entries


def _denied(client: redis.Redis) -> list[tuple[str, int]]:
    found = sorted(client.scan_iter(match=keys.DENY_PATTERN, count=1000))
    if not found:
        return []
    since = client.mget(found)
    return [
        (keys.user_of(key), int(value) if value and value.isdigit() else 0)
        for key, value in zip(found, since, strict=True)
        if value is not None
    ]
