"""The Redis key schema, and the two ways we talk to Redis.

One key per authorized client address: `pbs:client:<normalised address>`, whose
value is the user who logged in and whose expiry is the end of the authorization.
This module is the only place that knows that.

The policy handler only ever reads keys (one GET per request; the policy server
one MGET per round), on a process started per Postfix connection, so it gets
`Lookup`: a few lines of RESP over a plain socket, because importing redis-py
costs more than everything else the handler does. It reads
from the server `[redis] url` names (typically a local replica), or asks Sentinel
where the master is. The reader and the CLI write, scan and use Sentinel; they
get redis-py through `connect`, and every write waits until a replica has it
(`WAIT`), so that a failover loses no login.
"""

from __future__ import annotations

import _socket  # the C half of `socket`: the Python half imports enum and selectors (~5 ms)
import sys
import time

from pbs_activated import defaults

TYPE_CHECKING = False  # typing itself costs the handler milliseconds
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable
    from typing import TypeVar

    import redis

    from pbs_activated.config import RedisSettings

    _Q = TypeVar("_Q")
    _A = TypeVar("_A")


class StoreUnavailable(Exception):
    """Redis could not answer: down, slow, refusing our password, or in error."""


class ReplicationUnconfirmed(StoreUnavailable):
    """The master took a write but too few replicas confirmed it: send it again.

    Re-sending is safe, as every write here is idempotent, and necessary: a master
    that dies now takes the write with it.
    """


def client_key(address: str) -> str:
    """Return the Redis key of a normalised client address."""
    return defaults.KEY_PREFIX + address


def address_of(key: str) -> str:
    """Return the client address a key stands for."""
    return key.removeprefix(defaults.KEY_PREFIX)


def set_kernel_timeouts(sock: _socket.socket, seconds: float, *options: int) -> None:
    """Bound a blocking socket's waits in the kernel (SO_RCVTIMEO, SO_SNDTIMEO).

    A Python socket with a timeout calls poll() before every send and receive;
    a blocking one with these options waits in the call itself, one system call
    instead of two, and a wait that runs out raises BlockingIOError. The size of
    the kernel's timeval (two longs) is read back rather than assumed.
    """
    size = len(sock.getsockopt(_socket.SOL_SOCKET, options[0], 16)) // 2
    micros = int(seconds * 1_000_000) + 1  # zero would mean no timeout at all
    timeval = (micros // 1_000_000).to_bytes(size, sys.byteorder) + (micros % 1_000_000).to_bytes(
        size, sys.byteorder
    )
    for option in options:
        sock.setsockopt(_socket.SOL_SOCKET, option, timeval)


class Lookup:
    """A minimal Redis client for the handler: AUTH, SELECT, GET and MGET over one socket.

    The connection is opened on first use and kept for the following requests; a
    kept connection that fails is replaced once, at once, since it may simply have
    outlived a restart or a failover. Every call finishes within
    `settings.timeout`, connection (and the questions to Sentinel) included,
    and counted from the prefetch when there was one.

    With `sentinels`, each sentinel in turn is asked where the master is and which
    replicas it knows; the first of those servers that answers is read from. A
    replica serves the handler as well as the master does (it only reads), so
    lookups go on during a failover while any server is reachable.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._socket: _socket.socket | socket.socket | None = None
        self._buffer = b""
        self._deadline = 0.0
        self._armed = 0.0
        """The timeout last set on the socket: see _arm."""
        self._tls_context: ssl.SSLContext | None = None
        self._asked: list[str] = []
        """Keys of the GET or MGET `prefetch` sent, whose reply has not been read."""

    def prefetch(self, addresses: list[str]) -> None:
        """Ask for these addresses now and take the reply in `user_for`/`users_for`.

        The caller parses and checks its requests while Redis answers, instead
        of before asking: that takes the parsing off the time Postfix waits.
        Only on a kept connection (opening one is the lookups' job, with their
        retry); anything that goes wrong here is left for them to find again,
        within the timeout that starts here.
        """
        if self._socket is None or self._asked or not addresses:
            return
        self._deadline = time.monotonic() + self.settings.timeout
        keys = [client_key(address) for address in addresses]
        try:
            self._send(encode_command(("GET", keys[0]) if len(keys) == 1 else ("MGET", *keys)))
        except (OSError, StoreUnavailable):
            self.close()
            return
        self._asked = keys

    def user_for(self, address: str) -> str | None:
        """Return the user authorized at `address`, or None; raise StoreUnavailable."""
        key = client_key(address)
        if self._asked:
            prefetched = self._prefetched()
            if key in prefetched:
                return prefetched[key]
            return self._ask(self._get, key, self._deadline)
        return self._ask(self._get, key)

    def users_for(self, addresses: list[str]) -> list[str | None]:
        """`user_for` of several addresses in one MGET, one round trip; in their order."""
        keys = [client_key(address) for address in addresses]
        if self._asked:
            prefetched = self._prefetched()
            if all(key in prefetched for key in keys):
                return [prefetched[key] for key in keys]
            return self._ask(self._users, ["MGET", *keys], self._deadline)
        return self._ask(self._users, ["MGET", *keys])

    def forget_prefetch(self) -> None:
        """Read and drop the reply of a prefetch no lookup used (the request was not one)."""
        if self._asked:
            self._prefetched()

    def _prefetched(self) -> dict[str, str | None]:
        """The reply to the prefetch, by key; empty (and the connection dropped) on failure.

        A failure is not reported here: the lookup that wanted the reply asks
        again on a new connection, as for any kept connection that failed, within
        what is left of the timeout that started with the prefetch.
        """
        keys, self._asked = self._asked, []
        try:
            if len(keys) == 1:
                return {keys[0]: self._get_reply()}
            return dict(zip(keys, self._users_reply(len(keys)), strict=True))
        except (OSError, ValueError, StoreUnavailable):
            self.close()
            return {}

    def _ask(self, question: Callable[[_Q], _A], argument: _Q, deadline: float = 0.0) -> _A:
        """Put `question` to Redis within the timeout, connecting (again) as needed.

        After a prefetch, the lookup's `deadline` is the prefetch's: its time
        counts from when the question first went out.
        """
        self._deadline = deadline or time.monotonic() + self.settings.timeout
        if self._socket is not None:
            try:
                return question(argument)
            except (OSError, ValueError, StoreUnavailable):
                self.close()
        try:
            self._connect()
            return question(argument)
        except (OSError, ValueError, StoreUnavailable) as error:
            self.close()
            if isinstance(error, StoreUnavailable):
                raise
            raise StoreUnavailable(_describe(error)) from None

    def _users(self, command: list[str]) -> list[str | None]:
        self._send(encode_command(tuple(command)))
        return self._users_reply(len(command) - 1)

    def _users_reply(self, count: int) -> list[str | None]:
        values = self._reply()
        if not isinstance(values, list) or len(values) != count:
            raise StoreUnavailable(f"unexpected reply to MGET: {str(values)[:80]}")
        return [
            value.decode("utf-8", "replace") if isinstance(value, bytes) else None
            for value in values
        ]

    def close(self) -> None:
        """Drop the connection; the next lookup opens a new one."""
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._buffer = b""
        self._asked = []

    def _get(self, key: str) -> str | None:
        self._send(encode_command(("GET", key)))
        return self._get_reply()

    def _get_reply(self) -> str | None:
        value = self._whole_bulk_reply() if not self._buffer else self._reply()
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise StoreUnavailable(f"unexpected reply to GET: {value!r}")
        return value.decode("utf-8", "replace")

    def _whole_bulk_reply(self) -> bytes | int | list[object] | None:
        """_reply() for the reply a GET nearly always gets: one bulk string in one piece,
        taken from the first receive without the general parser's calls per line.

        The handler runs this once per request, and the general path's function
        calls cost it a few microseconds each time. Anything else (an error, a
        reply in pieces) goes to the general parser with what was received.
        """
        self._fill()
        reply = self._buffer
        end = reply.find(b"\r\n")
        if reply[:1] == b"$" and end > 0 and reply.endswith(b"\r\n"):
            length = int(reply[1:end])
            if length < 0 and len(reply) == end + 2:
                self._buffer = b""
                return None
            if len(reply) == end + length + 4:
                self._buffer = b""
                return reply[end + 2 : -2]
        return self._reply()

    def _connect(self) -> None:
        settings = self.settings
        if settings.sentinels:
            self._connect_through_sentinels()
        elif settings.unix_path:
            self._socket = self._open(_socket.AF_UNIX, settings.unix_path)
            self._log_in()
        else:
            self._connect_server(settings.host, settings.port)

    def _connect_server(self, host: str, port: int) -> None:
        """Connect to a Redis server over TCP (TLS for rediss://) and log in."""
        self._socket = self._secure(self._open_tcp(host, port), host)
        self._log_in()

    def _log_in(self) -> None:
        settings = self.settings
        if settings.password:
            if settings.username:
                self._command("AUTH", settings.username, settings.password)
            else:
                self._command("AUTH", settings.password)
        if settings.db:
            self._command("SELECT", str(settings.db))

    def _connect_through_sentinels(self) -> None:
        """Ask the sentinels in turn for servers; connect to the first server that answers.

        Each sentinel, then each server it names, gets an equal share of the time
        left, so one host that drops packets cannot use up the whole budget.
        """
        sentinels = self.settings.sentinels
        overall = self._deadline
        failure = StoreUnavailable("no sentinel answered")
        try:
            for index, (host, port) in enumerate(sentinels):
                self._deadline = _share(overall, len(sentinels) - index)
                try:
                    servers = self._ask_sentinel(host, port)
                except (OSError, ValueError, StoreUnavailable) as error:
                    failure = _sentinel_error(host, port, error)
                    self.close()
                    continue
                if not servers:
                    failure = StoreUnavailable(f"sentinel {host}:{port} knows no server")
                for position, (server_host, server_port) in enumerate(servers):
                    self._deadline = _share(overall, len(servers) - position)
                    try:
                        self._connect_server(server_host, server_port)
                        return
                    except (OSError, ValueError, StoreUnavailable) as error:
                        failure = _server_error(server_host, server_port, error)
                        self.close()
                if time.monotonic() >= overall:
                    break
        finally:
            self._deadline = overall
        raise failure

    def _ask_sentinel(self, host: str, port: int) -> list[tuple[str, int]]:
        """Return the master, then the healthy replicas, that one sentinel knows of."""
        self._socket = self._secure(self._open_tcp(host, port), host)
        service = self.settings.service
        commands: list[tuple[str, ...]] = [
            ("SENTINEL", "get-master-addr-by-name", service),
            ("SENTINEL", "replicas", service),
        ]
        if self.settings.sentinel_password:
            commands.insert(0, ("AUTH", self.settings.sentinel_password))
        # One round trip: the sentinel answers in order, and an error reply stops us.
        self._send(b"".join(encode_command(command) for command in commands))
        replies = [self._reply() for _ in commands]
        self.close()
        return sentinel_servers(replies[-2], replies[-1])

    def _secure(self, sock: _socket.socket, host: str) -> _socket.socket | socket.socket:
        """Wrap a connected socket in TLS for rediss://; leave it as it is otherwise."""
        if not self.settings.tls:
            return sock
        import socket  # only for rediss://: socket and ssl cost the handler ~15 ms of imports

        plain = socket.socket(fileno=sock.detach())
        try:
            self._armed = self._remaining()
            plain.settimeout(self._armed)  # the TLS handshake runs within the deadline
            return self._tls().wrap_socket(plain, server_hostname=host)
        except BaseException:
            plain.close()
            raise

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = tls_context(self.settings)
        return self._tls_context

    def _open(self, family: int, address: str | tuple[object, ...]) -> _socket.socket:
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            self._armed = self._remaining()
            sock.settimeout(self._armed)
            sock.connect(address)
            if not self.settings.tls:
                sock.settimeout(None)
                set_kernel_timeouts(sock, self._armed, *_TIMEOUT_OPTIONS)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_tcp(self, host: str, port: int) -> _socket.socket:
        """Connect to the first address of `host` that answers, as socket.create_connection does."""
        failure: Exception = StoreUnavailable(f"no address for {host}")
        # A host given as str makes getaddrinfo load the idna codec (re, unicodedata,
        # stringprep: 6-8 ms per handler start); an ASCII name needs no IDNA.
        name = host.encode("ascii") if host.isascii() else host
        for family, _, _, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
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

    def _arm(self) -> None:
        """Make the socket's next wait end at the deadline, give or take TIMEOUT_SLACK.

        settimeout is a system call; on a kept connection the time left at each
        send and receive differs from the armed timeout by microseconds, so it is
        re-armed only when they differ by more than the slack.
        """
        assert self._socket is not None
        remaining = self._remaining()
        if abs(remaining - self._armed) > defaults.REDIS_TIMEOUT_SLACK:
            if self._socket.gettimeout() is None:  # a plain socket: see _open
                set_kernel_timeouts(self._socket, remaining, *_TIMEOUT_OPTIONS)  # type: ignore[arg-type]
            else:
                self._socket.settimeout(remaining)
            self._armed = remaining

    def _command(self, *arguments: str) -> bytes | int | list[object] | None:
        self._send(encode_command(arguments))
        return self._reply()

    def _send(self, data: bytes) -> None:
        """Send within the deadline; an SO_SNDTIMEO that runs out is a timeout like any other."""
        assert self._socket is not None
        self._arm()
        try:
            self._socket.sendall(data)
        except BlockingIOError:
            raise TimeoutError("timed out") from None

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
        self._arm()
        try:
            chunk = self._socket.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from None
        if not chunk:
            raise StoreUnavailable("Redis closed the connection")
        self._buffer += chunk


_TIMEOUT_OPTIONS = (_socket.SO_RCVTIMEO, _socket.SO_SNDTIMEO)


def sentinel_servers(master: object, replicas: object) -> list[tuple[str, int]]:
    """Turn a sentinel's answers into servers to try: the master, then usable replicas.

    `master` is the reply to `SENTINEL get-master-addr-by-name` ([ip, port] or nil);
    `replicas` the reply to `SENTINEL replicas`, one flat name/value list per
    replica. Replicas the sentinel sees as down or disconnected are left out; a
    replica that only lost its master stays in, as it still serves its data.
    """
    servers: list[tuple[str, int]] = []
    if isinstance(master, list) and len(master) == 2:
        servers.append(_server(master[0], master[1]))
    for entry in replicas if isinstance(replicas, list) else ():
        if not isinstance(entry, list):
            continue
        fields = dict(zip(entry[::2], entry[1::2], strict=False))
        flags = fields.get(b"flags", b"")
        if not isinstance(flags, bytes) or set(flags.split(b",")) & _UNUSABLE_REPLICA_FLAGS:
            continue
        server = _server(fields.get(b"ip"), fields.get(b"port"))
        if server not in servers:
            servers.append(server)
    return servers


_UNUSABLE_REPLICA_FLAGS = {b"s_down", b"o_down", b"disconnected"}


def _server(host: object, port: object) -> tuple[str, int]:
    if not isinstance(host, bytes) or not isinstance(port, bytes) or not port.isdigit():
        raise StoreUnavailable(f"sentinel named no server: {host!r}:{port!r}")
    return host.decode("ascii", "replace"), int(port)


def _share(deadline: float, attempts_left: int) -> float:
    """Return the deadline of the next of `attempts_left` attempts sharing the time left."""
    now = time.monotonic()
    return now + max(deadline - now, 0.0) / max(attempts_left, 1)


def _sentinel_error(host: str, port: int, error: Exception) -> StoreUnavailable:
    return _server_error(host, port, error, "sentinel ")


def _server_error(host: str, port: int, error: Exception, kind: str = "") -> StoreUnavailable:
    """Name the server a failure came from: with Sentinel there are several to try."""
    reason = str(error) if isinstance(error, StoreUnavailable) else _describe(error)
    return StoreUnavailable(f"{kind}{host}:{port}: {reason}")


def tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """Return the TLS context for rediss://: our CA (or the system's), our certificate if any.

    Hostnames are checked: the server's certificate must name the host we
    connected to, an IP address included when Sentinel hands out addresses.
    """
    import ssl

    context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    if settings.tls_cert_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
    return context


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
"""Set the key unless it already lasts as long or longer (or forever).

Atomic on the server, so two POP hosts, or a replayed old login racing a new one,
can only ever lengthen an authorization. PEXPIRETIME needs Redis 7 (bookworm has 7.0).
When the key already lasts longer, it is written again unchanged (PEXPIREAT to
its own expiry): a re-sent write still replicates, so WAIT confirms that the
replicas hold the key, and not merely that this connection had nothing to send.
"""


class Replication:
    """How many replicas must confirm a write, and what the master last told us.

    `connect` attaches one to every client it returns (`client.pbs_replication`),
    so the reader and the CLI call `authorize(client, ...)` without knowing about it.
    """

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


def connect(settings: RedisSettings) -> redis.Redis:
    """Return a redis-py client for the master: through Sentinel if configured.

    Every command, and every question to a Sentinel, is one attempt within
    `[redis] timeout`, whichever redis-py is installed (see `_one_attempt`): the
    reader retries with its own back-off, and the CLI should answer at once.
    """
    import redis as redis_py

    one_attempt = _one_attempt()
    options: dict[str, object] = {
        "username": settings.username or None,
        "password": settings.password or None,
        "db": settings.db,
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "decode_responses": True,
        **one_attempt,
    }
    tls = tls_options(settings)
    if settings.sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={
                "password": settings.sentinel_password or None,
                "socket_timeout": settings.timeout,
                "socket_connect_timeout": settings.timeout,
                **one_attempt,
                **tls,
            },
            **options,
            **tls,
        )
        client = sentinel.master_for(settings.service)
    elif settings.unix_path:
        client = redis_py.Redis(unix_socket_path=settings.unix_path, **options)
    else:
        client = redis_py.Redis(host=settings.host, port=settings.port, **options, **tls)
    client.pbs_replication = Replication(settings.min_replicas, settings.replication_timeout)
    return client


def _one_attempt() -> dict[str, object]:
    """redis-py options for one attempt per command and no CLIENT SETINFO, on 4.3 to 6.x.

    redis-py 6 (Debian 13's 6.1) gives every `Redis` it builds, a Sentinel's
    included, a `Retry` of three more attempts with exponential back-off on
    connection errors and timeouts; 4.3 (Debian 12's 4.3.4) gives none. With
    `timeout = 1`, a write on a kept connection to a stalled server took 10 s, and
    finding the master past a stalled Sentinel 11 s. `Retry(NoBackoff(), 0)` is one
    attempt on both, for connecting as for the command, and for finding the master,
    which a Sentinel-managed connection does inside its own `retry`.
    `retry_on_timeout`, `retry_on_error` and `health_check_interval` keep their
    defaults, which add no retry on either version.

    redis-py 5 and later also send CLIENT SETINFO LIB-NAME and LIB-VER on every new
    connection: refused for a restricted ACL user (an entry in its ACL LOG each
    time), and by Redis 7.0, which lacks the command. `lib_name=None,
    lib_version=None` turn them off, but 4.3 has no such keywords and refuses
    unknown ones, so they are passed only where redis-py's own signature lists
    them: the library says what it takes, with no table of which version added what.
    """
    import inspect

    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, object] = {"retry": Retry(NoBackoff(), 0)}
    if "lib_name" in inspect.signature(redis_py.Redis).parameters:
        options.update(lib_name=None, lib_version=None)
    return options


def tls_options(settings: RedisSettings) -> dict[str, object]:
    """Return redis-py's TLS options for rediss:// (the same checks as the handler's)."""
    if not settings.tls:
        return {}
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": settings.tls_ca_file or None,
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
    }


def authorize(client: redis.Redis, address: str, user: str, expires_at_ms: int) -> bool:
    """Authorize `address` until `expires_at_ms` (Unix ms); False if it already lasts longer.

    Returns only once the write is safe from a failover: when the master has
    replicas online, at least one of them (or `[redis] min_replicas_acknowledged`)
    has confirmed it (`WAIT`). Raises otherwise, ReplicationUnconfirmed or
    redis-py's errors alike: the caller must send it again, which is harmless,
    as the same login gives the same PXAT. A lone Redis confirms at once.
    Sent again on the same client after ReplicationUnconfirmed, it returns what
    the unconfirmed attempt did (True if that one set the key).
    """
    changed = _confirmed_write(
        client, ("EVAL", _AUTHORIZE, 1, client_key(address), user, str(expires_at_ms))
    )
    return bool(changed)


def revoke(client: redis.Redis, address: str) -> bool:
    """Remove an authorization; False if there was none. Confirmed by replicas as authorize is."""
    return bool(_confirmed_write(client, ("DEL", client_key(address))))


def _confirmed_write(client: redis.Redis, command: tuple[object, ...]) -> object:
    """Run a write and WAIT for the replicas, in one round trip; return the write's reply.

    WAIT counts the replicas that have every write of *its own connection*, so the
    write, ROLE (how many replicas are online) and WAIT go in one pipeline, which
    redis-py sends on one connection. The number to wait for is what the master
    reported at the previous write; when that falls short of what ROLE now
    reports, the write and WAIT are sent once more with the right number.
    """
    replication: Replication = getattr(client, "pbs_replication", None) or Replication()
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


def authorizations(client: redis.Redis) -> list[tuple[str, str, int]]:
    """Return (address, user, expiry in Unix ms, -1 for none) of every authorization, by address.

    The absolute expiry (PEXPIRETIME) is what a write needs to copy one to another
    store unchanged (`migrate`); `list_authorized` turns it into seconds left.
    """
    keys = sorted(client.scan_iter(match=defaults.KEY_PREFIX + "*", count=1000))
    if not keys:
        return []
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.get(key)
        pipeline.execute_command("PEXPIRETIME", key)
    replies = pipeline.execute()
    entries = []
    for index, key in enumerate(keys):
        user, expires_ms = replies[2 * index], int(replies[2 * index + 1])
        if user is not None and expires_ms != -2:  # -2: expired since the SCAN
            entries.append((address_of(key), user, expires_ms))
    return entries


def list_authorized(client: redis.Redis) -> list[tuple[str, str, float]]:
    """Return (address, user, seconds left) for every authorization, by address."""
    now = now_ms()
    return [
        (address, user, (expires_ms - now) / 1000 if expires_ms >= 0 else float("inf"))
        for address, user, expires_ms in authorizations(client)
    ]


def now_ms() -> int:
    """Return the wall clock in Unix milliseconds, the unit of PXAT."""
    return time.time_ns() // 1_000_000
