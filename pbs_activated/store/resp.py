"""One connection to a Redis-protocol server, for the handler: RESP2 over a plain socket.

Why our own: importing redis-py costs the per-connection handler more than
everything else it does, and it only ever sends AUTH, SELECT, GET, MGET and
two Sentinel questions. The codec (`Parser`) has hiredis.Reader's interface,
so that the two can be measured against each other (docs/performance.md).

Every wait ends at the connection's `deadline` (a `time.monotonic()` value the
caller sets per question): connecting, the TLS handshake and resolving a host
name included. A plain socket is opened here (`open_unix`, `open_socket`), its
waits bounded in the kernel; TCP, TLS and name resolution are sockets.py's,
which the handler of the package's own store (a unix socket) never imports.
"""

from __future__ import annotations

import _socket  # the C half of `socket`: the Python half imports enum and selectors (~5 ms)
import sys
import time

from pbs_activated.config import defaults
from pbs_activated.store import StoreUnavailable, error_reply

TYPE_CHECKING = False  # typing itself costs the handler milliseconds
if TYPE_CHECKING:
    import socket
    from typing import TypeAlias

    Reply: TypeAlias = "bytes | int | list[Reply] | ReplyError | None"


class ReplyError(Exception):
    """An error reply (`-ERR ...`), returned by `Parser.gets` as a value, as hiredis does.

    Inside an array (a pipeline's or a transaction's replies) it is one value among
    others; only the connection turns a top-level one into a typed error.
    """


class ProtocolError(StoreUnavailable):
    """What the server sent is not RESP: the connection cannot be trusted any more."""


INCOMPLETE = -1
"""The offset `_parse` returns for a reply the buffer holds only part of.

A value, not an exception: raising one preallocated exception again and again
grows its traceback (584 bytes kept per incomplete read, and slower each time)."""


class Parser:
    """RESP2 replies from bytes fed in any pieces: `feed` them, `gets` each reply.

    The buffer is read by offset, never sliced line by line; consumed bytes are
    dropped when the next piece is fed. `gets` returns False while a reply is
    incomplete (hiredis.Reader's convention), bulk strings as bytes, simple
    strings as bytes, error replies as ReplyError values, nil as None.
    """

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        if self._offset:
            self._buffer = self._buffer[self._offset :] + data
            self._offset = 0
        else:
            self._buffer += data

    def gets(self) -> Reply | bool:
        """Return the next whole reply, or False if the buffer holds none yet."""
        buffer = self._buffer
        value, offset = _parse(buffer, self._offset)
        if offset == INCOMPLETE:
            return False
        self._offset = offset
        if offset == len(buffer):
            self._buffer, self._offset = b"", 0
        return value

    def has_data(self) -> bool:
        """Whether bytes of an unread reply are buffered."""
        return self._offset < len(self._buffer)


def _parse(buffer: bytes, start: int) -> tuple[Reply, int]:
    """The reply at `start` and the offset after it, or INCOMPLETE if it is cut off."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None, INCOMPLETE
    kind = buffer[start]
    if kind == 0x24:  # $: bulk string
        length = _number(buffer, start, end)
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(buffer) < stop + 2:
            return None, INCOMPLETE
        if buffer[stop : stop + 2] != b"\r\n":
            raise ProtocolError("bulk string without its CRLF")
        return buffer[end + 2 : stop], stop + 2
    if kind == 0x2A:  # *: array
        count = _number(buffer, start, end)
        if count < 0:
            return None, end + 2
        items = []
        offset = end + 2
        for _ in range(count):
            item, offset = _parse(buffer, offset)
            if offset == INCOMPLETE:
                return None, INCOMPLETE
            items.append(item)
        return items, offset
    if kind == 0x3A:  # :
        return _number(buffer, start, end), end + 2
    if kind == 0x2B:  # +
        return buffer[start + 1 : end], end + 2
    if kind == 0x2D:  # -
        return ReplyError(buffer[start + 1 : end].decode("utf-8", "replace")), end + 2
    raise ProtocolError(f"not a Redis reply: {buffer[start : start + 40]!r}")


def _number(buffer: bytes, start: int, end: int) -> int:
    """The decimal number after a reply's type byte: digits, a minus sign at most.

    Checked before int(), which would also take " 5", "+5" or "1_0".
    """
    text = buffer[start + 1 : end]
    if not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        raise ProtocolError(f"not a Redis reply: {buffer[start : start + 40]!r}")
    return int(text)


def encode_command(arguments: tuple[str, ...]) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        encoded = argument.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(encoded), encoded))
    return b"".join(parts)


class Connection:
    """One connected, logged-in socket to a server, its parser, and its deadline.

    A failure leaves the connection unusable (a reply may be half read): the
    caller closes it and opens another, which every caller here does.
    """

    def __init__(self, sock: _socket.socket | socket.socket, armed: float, deadline: float) -> None:
        self.socket = sock
        self.deadline = deadline
        """When the current question must have its answer (time.monotonic())."""
        self.parser = Parser()
        self._armed = armed
        """The timeout last set on the socket: see _arm."""
        self._logins = 0
        """Replies to `send_login`'s commands not read yet: `reply` reads them first."""

    def command(self, *arguments: str) -> Reply:
        """Send one command and return its reply; an error reply raises its typed error."""
        self.send(encode_command(arguments))
        return self.reply()

    def send(self, data: bytes) -> None:
        """Send within the deadline; an SO_SNDTIMEO that runs out is a timeout like any other."""
        self._arm()
        try:
            self.socket.sendall(data)
        except BlockingIOError:
            raise TimeoutError("timed out") from None

    def reply(self) -> Reply:
        """Read one reply; a top-level error reply raises (errors.error_reply)."""
        if self._logins:  # a refused login raises before any reply sent after it
            self._read_logins()
        return self._read()

    def _read_logins(self) -> None:
        while self._logins:
            self._logins -= 1
            self._read()

    def _read(self) -> Reply:
        parser = self.parser
        if not parser.has_data():  # the usual case: no need to look for a reply yet
            self._fill()
        while (value := parser.gets()) is False:
            self._fill()
        if isinstance(value, ReplyError):
            raise error_reply(str(value))
        return value

    def send_login(self, username: str, password: str, db: int = 0) -> None:
        """Send AUTH (with the user name if there is one) and SELECT, as the settings say.

        Without waiting: the commands sent next follow them in the same round
        trip, and the first `reply` reads (and checks) theirs first.
        """
        commands: list[tuple[str, ...]] = []
        if password:
            commands.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            commands.append(("SELECT", str(db)))
        if commands:
            self.send(b"".join([encode_command(command) for command in commands]))
            self._logins += len(commands)

    def log_in(self, username: str, password: str, db: int = 0) -> None:
        """`send_login`, and its replies read: in one round trip, AUTH and SELECT alike."""
        self.send_login(username, password, db)
        self._read_logins()

    def close(self) -> None:
        self.socket.close()

    def remaining(self) -> float:
        """The time left before the deadline; raise once it has passed."""
        return remaining(self.deadline)

    def _fill(self) -> None:
        self._arm()
        try:
            chunk = self.socket.recv(65536)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from None
        if not chunk:
            raise StoreUnavailable("Redis closed the connection")
        self.parser.feed(chunk)

    def _arm(self) -> None:
        """Make the socket's next wait end at the deadline, give or take the slack.

        settimeout is a system call; on a kept connection the time left at each
        send and receive differs from the armed timeout by microseconds, so it is
        re-armed only when they differ by more than REDIS_TIMEOUT_SLACK.
        """
        left = self.remaining()
        if abs(left - self._armed) > defaults.REDIS_TIMEOUT_SLACK:
            if self.socket.gettimeout() is None:  # a plain socket: see open_socket
                set_kernel_timeouts(self.socket, left, *TIMEOUT_OPTIONS)  # type: ignore[arg-type]
            else:
                self.socket.settimeout(left)
            self._armed = left


def remaining(deadline: float) -> float:
    """The seconds left before `deadline`; raise TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def open_unix(path: str, deadline: float) -> tuple[_socket.socket, float]:
    """Connect to a unix socket within the deadline."""
    return open_socket(_socket.AF_UNIX, path, deadline, False)


def open_socket(
    family: int, address: str | tuple[object, ...], deadline: float, tls: bool
) -> tuple[_socket.socket, float]:
    """A connected socket whose waits end at the deadline (in the kernel unless it is
    to carry TLS), and the timeout it was armed with."""
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        left = remaining(deadline)
        sock.settimeout(left)
        sock.connect(address)
        if not tls:
            sock.settimeout(None)
            set_kernel_timeouts(sock, left, *TIMEOUT_OPTIONS)
    except BaseException:
        sock.close()
        raise
    return sock, left


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


TIMEOUT_OPTIONS = (_socket.SO_RCVTIMEO, _socket.SO_SNDTIMEO)
