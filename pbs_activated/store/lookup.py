"""The handler's and the server's questions to the store: who is authorized at an address.

`Lookup` asks over one kept connection (resp.Connection): GET for one address,
MGET for several, and a `prefetch` that sends the question before the caller
has parsed its request, so that parsing happens while Redis answers
(docs/performance.md). `BrokenConfigLookup` meets the same interface for a
configuration that cannot be read. Both raise only StoreError.
"""

from __future__ import annotations

import time

from pbs_activated.store import StoreError, StoreUnavailable, failure, resp
from pbs_activated.store.keys import client_key

TYPE_CHECKING = False  # typing itself costs the handler milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol, TypeVar

    from pbs_activated.config import RedisSettings

    _Q = TypeVar("_Q")
    _A = TypeVar("_A")

    class Lookups(Protocol):
        """What answering needs of the store: Lookup, or BrokenConfigLookup."""

        def connect(self) -> None: ...
        def user_for(self, address: str) -> str | None: ...
        def users_for(self, addresses: list[str]) -> list[str | None]: ...
        def prefetch(self, addresses: list[str]) -> None: ...
        def forget_prefetch(self) -> None: ...
        def close(self) -> None: ...


class Lookup:
    """GET and MGET over one connection, opened on first use and kept.

    A kept connection that fails is replaced once, at once, since it may simply
    have outlived a restart or a failover. Every call finishes within
    `settings.timeout`, connecting (and asking Sentinel) included, counted from
    the prefetch when there was one. Which server: `[redis] url`, or with
    `sentinels` any server they name (sentinel.discover, readable).
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._connection: resp.Connection | None = None
        self._deadline = 0.0
        self._asked: list[str] = []
        """Keys of the GET or MGET `prefetch` sent, whose reply has not been read."""

    def connect(self) -> None:
        """Open the connection and send the login now; their replies come with the first question's.

        A handler starts as Postfix connects, and Redis answers a login in about
        the time the handler takes to read and parse Postfix's first request:
        sent first, the login costs that request no round trip of its own
        (docs/performance.md). Only to a unix socket without Sentinels, whose
        connect succeeds or fails at once: a store that is down costs nothing
        here, and the first lookup meets it (and reports it) as it would have.
        """
        settings = self.settings
        if self._connection is not None or settings.sentinels or not settings.unix_path:
            return
        deadline = time.monotonic() + settings.timeout
        try:
            connection = _unix(settings, deadline)
        except OSError:
            return
        try:
            connection.send_login(settings.username, settings.password, settings.db)
        except (OSError, StoreError):
            connection.close()
            return
        self._connection = connection

    def prefetch(self, addresses: list[str]) -> None:
        """Ask for these addresses now and take the reply in `user_for`/`users_for`.

        Only on a kept connection (opening one is the lookups' job, with their
        retry); anything that goes wrong here is left for them to find again,
        within the timeout that starts here.
        """
        connection = self._connection
        if connection is None or self._asked or not addresses:
            return
        self._deadline = connection.deadline = time.monotonic() + self.settings.timeout
        keys = [client_key(address) for address in addresses]
        try:
            connection.send(
                resp.encode_command(("GET", keys[0]) if len(keys) == 1 else ("MGET", *keys))
            )
        except (OSError, StoreError):
            self.close()
            return
        self._asked = keys

    def user_for(self, address: str) -> str | None:
        """Return the user authorized at `address`, or None; raise StoreError."""
        key = client_key(address)
        if self._asked:
            prefetched = self._prefetched()
            if key in prefetched:
                return prefetched[key]
            return self._ask(_get, key, self._deadline)
        return self._ask(_get, key)

    def users_for(self, addresses: list[str]) -> list[str | None]:
        """`user_for` of several addresses in one MGET, one round trip; in their order."""
        keys = [client_key(address) for address in addresses]
        if self._asked:
            prefetched = self._prefetched()
            if all(key in prefetched for key in keys):
                return [prefetched[key] for key in keys]
            return self._ask(_mget, keys, self._deadline)
        return self._ask(_mget, keys)

    def forget_prefetch(self) -> None:
        """Read and drop the reply of a prefetch no lookup used (the request was not one)."""
        if self._asked:
            self._prefetched()

    def close(self) -> None:
        """Drop the connection; the next lookup opens a new one."""
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._asked = []

    def _prefetched(self) -> dict[str, str | None]:
        """The reply to the prefetch, by key; empty (and the connection dropped) on failure.

        A failure is not reported here: the lookup that wanted the reply asks
        again on a new connection, as for any kept connection that failed, within
        what is left of the timeout that started with the prefetch.
        """
        keys, self._asked = self._asked, []
        connection = self._connection
        assert connection is not None
        try:
            if len(keys) == 1:
                return {keys[0]: _user(connection.reply())}
            return dict(zip(keys, _users(connection.reply(), len(keys)), strict=True))
        except (OSError, StoreError):
            self.close()
            return {}

    def _ask(
        self, question: Callable[[resp.Connection, _Q], _A], argument: _Q, deadline: float = 0.0
    ) -> _A:
        """Put `question` to the store within the timeout, connecting (again) as needed."""
        deadline = deadline or time.monotonic() + self.settings.timeout
        if self._connection is not None:
            self._connection.deadline = deadline
            try:
                return question(self._connection, argument)
            except (OSError, StoreError):
                self.close()
        try:
            return self._ask_anew(question, argument, deadline)
        except (OSError, StoreError) as error:
            self.close()
            raise failure(error) from None

    def _ask_anew(
        self, question: Callable[[resp.Connection, _Q], _A], argument: _Q, deadline: float
    ) -> _A:
        """Connect and ask; with Sentinel, of the first server that *answers* the question.

        The question is part of each server's attempt, so that a server which
        accepts the connection but cannot serve (LOADING, a master without its
        replicas: ServerNotReady) is passed over like one that is down.
        """
        settings = self.settings
        if not settings.sentinels:
            if settings.unix_path:
                self._connection = _logged_in(_unix(settings, deadline), settings)
            else:
                self._connection = self._server(settings.host, settings.port, deadline)
            return question(self._connection, argument)

        def attempt(host: str, port: int, share: float) -> _A:
            connection = self._server(host, port, share)
            try:
                answer = question(connection, argument)
            except BaseException:
                connection.close()
                raise
            connection.deadline = deadline
            self._connection = connection
            return answer

        from pbs_activated.store import sentinel  # only with Sentinels: a module less per start

        return sentinel.discover(settings, deadline, attempt, master_only=False)

    def _server(self, host: str, port: int, deadline: float) -> resp.Connection:
        from pbs_activated.store import sockets  # only for TCP: the package's own store is unix

        sock, armed = sockets.open_tcp(host, port, deadline, self.settings)
        return _logged_in(resp.Connection(sock, armed, deadline), self.settings)


def _unix(settings: RedisSettings, deadline: float) -> resp.Connection:
    return resp.Connection(*resp.open_unix(settings.unix_path, deadline), deadline)


def _logged_in(connection: resp.Connection, settings: RedisSettings) -> resp.Connection:
    try:
        connection.log_in(settings.username, settings.password, settings.db)
    except BaseException:
        connection.close()
        raise
    return connection


def _get(connection: resp.Connection, key: str) -> str | None:
    connection.send(resp.encode_command(("GET", key)))
    return _user(connection.reply())


def _mget(connection: resp.Connection, keys: list[str]) -> list[str | None]:
    connection.send(resp.encode_command(("MGET", *keys)))
    return _users(connection.reply(), len(keys))


def _user(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise StoreUnavailable(f"unexpected reply to GET: {value!r}")
    return value.decode("utf-8", "replace")


def _users(values: object, count: int) -> list[str | None]:
    if not isinstance(values, list) or len(values) != count:
        raise StoreUnavailable(f"unexpected reply to MGET: {str(values)[:80]}")
    return [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else None for value in values
    ]


class BrokenConfigLookup:
    """Stands in for the store when the config cannot be read: every lookup is unavailable.

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

    def connect(self) -> None:
        """Nothing to connect to."""

    def prefetch(self, addresses: list[str]) -> None:
        """Nothing to ask."""

    def forget_prefetch(self) -> None:
        """Nothing was asked."""

    def close(self) -> None:
        """Nothing to close."""
