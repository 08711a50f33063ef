"""The Redis key schema, and the two ways we talk to Redis.

One key per authorized client address: `pbs:client:<normalised address>`, whose
value is the user who logged in and whose expiry is the end of the authorization.
This module is the only place that knows that.

The policy handler only ever reads one key, on a process started per Postfix
connection, so it gets `Lookup`: a few lines of RESP over a plain socket, because
importing redis-py costs more than everything else the handler does. The reader
and the CLI write, scan and use Sentinel; they get redis-py through `connect`.
"""

from __future__ import annotations

import _socket  # the C half of `socket`: the Python half imports enum and selectors (~5 ms)
import time

from pbs_activated import defaults

TYPE_CHECKING = False  # typing itself costs the handler milliseconds
if TYPE_CHECKING:
    import socket

    import redis

    from pbs_activated.config import RedisSettings


class StoreUnavailable(Exception):
    """Redis could not answer: down, slow, refusing our password, or in error."""


def client_key(address: str) -> str:
    """Return the Redis key of a normalised client address."""
    return defaults.KEY_PREFIX + address


def address_of(key: str) -> str:
    """Return the client address a key stands for."""
    return key.removeprefix(defaults.KEY_PREFIX)


class Lookup:
    """A minimal Redis client for the handler: AUTH, SELECT and GET over one socket.

    The connection is opened on first use and kept for the following requests;
    after any failure it is dropped, and the next request connects afresh, so a
    Redis restart costs the requests made while it was down and nothing more.
    Every call finishes within `settings.timeout`, connection included.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._socket: _socket.socket | socket.socket | None = None
        self._buffer = b""
        self._deadline = 0.0

    def user_for(self, address: str) -> str | None:
        """Return the user authorized at `address`, or None; raise StoreUnavailable."""
        self._deadline = time.monotonic() + self.settings.timeout
        try:
            if self._socket is None:
                self._connect()
            value = self._command("GET", client_key(address))
        except (OSError, ValueError, StoreUnavailable) as error:
            self.close()
            if isinstance(error, StoreUnavailable):
                raise
            raise StoreUnavailable(_describe(error)) from None
        if value is None:
            return None
        if not isinstance(value, bytes):
            self.close()
            raise StoreUnavailable(f"unexpected reply to GET: {value!r}")
        return value.decode("utf-8", "replace")

    def close(self) -> None:
        """Drop the connection; the next lookup opens a new one."""
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._buffer = b""

    def _connect(self) -> None:
        settings = self.settings
        if settings.unix_path:
            sock = self._open(_socket.AF_UNIX, settings.unix_path)
        else:
            sock = self._open_tcp(settings.host, settings.port)
        if settings.tls:
            import socket
            import ssl  # only for rediss://: it costs the handler ~15 ms of imports

            sock = ssl.create_default_context().wrap_socket(
                socket.socket(fileno=sock.detach()), server_hostname=settings.host
            )
        self._socket = sock
        if settings.password:
            if settings.username:
                self._command("AUTH", settings.username, settings.password)
            else:
                self._command("AUTH", settings.password)
        if settings.db:
            self._command("SELECT", str(settings.db))

    def _open(self, family: int, address: str | tuple[str, int]) -> _socket.socket:
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self._remaining())
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_tcp(self, host: str, port: int) -> _socket.socket:
        """Connect to the first address of `host` that answers, as socket.create_connection does."""
        failure: Exception = StoreUnavailable(f"no address for {host}")
        for family, _, _, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
            try:
                sock = self._open(family, address)
            except OSError as error:
                failure = error
                continue
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        raise failure

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise StoreUnavailable(f"no answer within {self.settings.timeout:g} s")
        return remaining

    def _command(self, *arguments: str) -> bytes | int | list[object] | None:
        assert self._socket is not None
        self._socket.settimeout(self._remaining())
        self._socket.sendall(encode_command(arguments))
        return self._reply()

    def _reply(self) -> bytes | int | list[object] | None:
        """Read one RESP2 reply; an error reply raises StoreUnavailable."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise StoreUnavailable("Redis: " + rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            return self._exactly(length + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise StoreUnavailable(f"not a Redis reply: {line[:40]!r}")

    def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _fill(self) -> None:
        assert self._socket is not None
        self._socket.settimeout(self._remaining())
        chunk = self._socket.recv(65536)
        if not chunk:
            raise StoreUnavailable("Redis closed the connection")
        self._buffer += chunk


def encode_command(arguments: tuple[str, ...]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        encoded = argument.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(encoded), encoded))
    return b"".join(parts)


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "Redis did not answer in time"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot reach Redis: {error.strerror}"
    return f"cannot reach Redis: {error}"


# The writers' side: redis-py, imported only by the reader and the CLI.

_AUTHORIZE = """
local current = redis.call('PEXPIRETIME', KEYS[1])
if current == -1 or current >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""
"""Set the key unless it already lasts as long or longer (or forever).

Atomic on the server, so two POP hosts, or a replayed old login racing a new one,
can only ever lengthen an authorization. PEXPIRETIME needs Redis 7 (bookworm has 7.0).
"""


def connect(settings: RedisSettings) -> redis.Redis:
    """Return a redis-py client for the master: through Sentinel if configured."""
    import redis as redis_py

    options: dict[str, object] = {
        "username": settings.username or None,
        "password": settings.password or None,
        "db": settings.db,
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "decode_responses": True,
    }
    if settings.sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={
                "password": settings.sentinel_password or None,
                "socket_timeout": settings.timeout,
                "socket_connect_timeout": settings.timeout,
            },
            ssl=settings.tls,
            **options,
        )
        return sentinel.master_for(settings.service)
    if settings.unix_path:
        return redis_py.Redis(unix_socket_path=settings.unix_path, **options)
    return redis_py.Redis(host=settings.host, port=settings.port, ssl=settings.tls, **options)


def authorize(client: redis.Redis, address: str, user: str, expires_at_ms: int) -> bool:
    """Authorize `address` until `expires_at_ms` (Unix ms); False if it already lasts longer."""
    result = client.eval(_AUTHORIZE, 1, client_key(address), user, str(expires_at_ms))
    return bool(result)


def revoke(client: redis.Redis, address: str) -> bool:
    """Remove an authorization; False if there was none."""
    return bool(client.delete(client_key(address)))


def list_authorized(client: redis.Redis) -> list[tuple[str, str, float]]:
    """Return (address, user, seconds left) for every authorization, by address."""
    keys = sorted(client.scan_iter(match=defaults.KEY_PREFIX + "*", count=1000))
    if not keys:
        return []
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.get(key)
        pipeline.pttl(key)
    replies = pipeline.execute()
    entries = []
    for index, key in enumerate(keys):
        user, ttl = replies[2 * index], replies[2 * index + 1]
        if user is not None and ttl != -2:
            entries.append((address_of(key), user, ttl / 1000 if ttl >= 0 else float("inf")))
    return entries


def now_ms() -> int:
    """Return the wall clock in Unix milliseconds, the unit of PXAT."""
    return time.time_ns() // 1_000_000
