"""The answer path (handler.py, server.py, service.py), and here what every module of it
speaks: Postfix's policy delegation protocol (SMTPD_POLICY_README), as pure functions.

A request is `name=value` lines ended by an empty line; the reply is `action=...`
and an empty line. Postfix keeps the connection open and sends request after
request on it, and the bytes arrive in whatever pieces the kernel hands over, so
the parser is incremental: it takes chunks and returns the requests they complete.

It is the package itself, not a module of its own, because the handler imports
the package anyway on every Postfix connection (config/ and store/ do the same
with their settings and their errors).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer does not speak the policy protocol within our limits."""


class LimitExceeded(ProtocolError):
    """A line or a request is longer than its named limit.

    `complete` holds the requests that the same chunk completed before the
    violation: they were well-formed and deserve their answers.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.complete: list[Request] = []


class Request:
    """One policy request: its attributes, and whether any line was malformed."""

    __slots__ = ("attributes", "malformed")

    def __init__(self, attributes: dict[str, str], malformed: str = "") -> None:
        self.attributes = attributes
        self.malformed = malformed
        """Why the request cannot be trusted (empty when it can): such a request never gets OK."""

    def get(self, name: str) -> str:
        """Return an attribute's value, or the empty string as Postfix means by absence."""
        return self.attributes.get(name, "")

    def __repr__(self) -> str:
        return f"Request({self.attributes!r}, malformed={self.malformed!r})"


class RequestParser:
    """Turns a stream of chunks into complete requests, enforcing the size limits."""

    def __init__(self, max_line_length: int, max_request_size: int) -> None:
        self.max_line_length = max_line_length
        self.max_request_size = max_request_size
        self._pending = b""
        self._lines: list[bytes] = []
        self._request_size = 0

    def feed(self, chunk: bytes) -> list[Request]:
        """Add bytes from the connection; return the requests they complete, in order.

        Raises LimitExceeded when a line or a request outgrows its limit; the
        connection should then be closed, since resynchronising is guesswork.
        """
        if not self._pending and not self._lines:
            request = self._whole_request(chunk)
            if request is not None:
                return [request]
        # One split and one pass with the limits checked inline: this runs for
        # every request, and a function call or a slice per line cost a handler
        # about a third of its time per request.
        requests: list[Request] = []
        lines = (self._pending + chunk).split(b"\n")
        pending = lines.pop()
        current, size = self._lines, self._request_size
        max_line_length, max_request_size = self.max_line_length, self.max_request_size
        try:
            for line in lines:
                if not line or line == b"\r":
                    if current:
                        requests.append(parse_request(current))
                        current = []
                    size = 0
                    continue
                size += len(line) + 1
                if len(line) > max_line_length or size > max_request_size:
                    self._check(len(line), size)
                current.append(line)
            self._lines, self._request_size, self._pending = current, size, pending
            self._check(len(pending), size + len(pending))
        except LimitExceeded as error:
            self._lines, self._request_size = current, size
            error.complete = requests
            raise
        return requests

    def _whole_request(self, chunk: bytes) -> Request | None:
        """The request in `chunk` if it holds exactly one, well-formed, within the limits.

        That is what Postfix sends nearly every time, and then the general path
        would find the same request and raise nothing: the request's size is the
        chunk less its empty line, and no line is longer than the chunk. Parsing
        it without a loop per line saves a handler a fifth of its time per
        request. Anything else (None) takes the general path.
        """
        end = len(chunk) - 2
        if end <= 0 or chunk.find(b"\n\n") != end or chunk[0] == 0x0A or b"\r" in chunk:
            return None
        if end + 1 > self.max_request_size:
            return None
        block = chunk[:end]
        if end > self.max_line_length and max(map(len, block.split(b"\n"))) > self.max_line_length:
            return None
        attributes = _well_formed(block.decode("utf-8", "replace"))
        return None if attributes is None else Request(attributes)

    @property
    def in_request(self) -> bool:
        """True while a request has started and not yet ended (EOF here is a truncation)."""
        return bool(self._lines or self._pending)

    def _check(self, line_length: int, request_size: int) -> None:
        if line_length > self.max_line_length:
            raise LimitExceeded(f"line longer than {self.max_line_length} bytes")
        if request_size > self.max_request_size:
            raise LimitExceeded(f"request larger than {self.max_request_size} bytes")


def parse_request(lines: list[bytes]) -> Request:
    """Build a Request from its lines (without the empty line that ended it).

    Bytes that are not UTF-8 are replaced rather than refused: Postfix passes
    SMTPUTF8 addresses and arbitrary HELO names, and an odd sender must not cost
    a client its answer. Unknown attributes are kept and ignored. A line without
    `=`, or an attribute given twice, marks the request malformed: Postfix never
    sends either, so something is wrong and the request must not authorize.
    """
    # What Postfix sends (no CR, every line name=value, no name twice) is built
    # by _well_formed; anything else takes the line by line path, which says
    # what is wrong. "\n" is never part of a UTF-8 sequence, so decoding the
    # joined lines replaces exactly what decoding each line would.
    text = b"\n".join(lines).decode("utf-8", "replace")
    if "\r" not in text:
        attributes = _well_formed(text)
        if attributes is not None:
            return Request(attributes)
    return _parse_lines(lines)


def _well_formed(text: str) -> dict[str, str] | None:
    """The attributes of a request's text (lines without CR), or None if any line is malformed.

    Built with map() over C methods, no Python code per line: every line has
    its first `=` after at least one character, and no name comes twice.
    """
    lines = text.split("\n")
    count = len(lines)
    equals = ["="] * count
    if min(map(str.find, lines, equals)) < 1:
        return None
    attributes = dict(map(str.split, lines, equals, [1] * count))
    return attributes if len(attributes) == count else None


def _parse_lines(lines: list[bytes]) -> Request:
    """parse_request, one line at a time, naming the first malformed line."""
    attributes: dict[str, str] = {}
    malformed = ""
    for raw in lines:
        line = raw.decode("utf-8", "replace").removesuffix("\r")
        name, equals, value = line.partition("=")
        if not equals or not name:
            malformed = malformed or f"line without name=value: {line[:80]!r}"
            continue
        if name in attributes:
            malformed = malformed or f"attribute {name!r} given twice"
            continue
        attributes[name] = value
    return Request(attributes, malformed)


def rcpt_client_address(chunk: bytes) -> str | None:
    """The client_address of the one RCPT request `chunk` holds, found without parsing it.

    The handler sends its Redis lookup for this address before it parses the
    chunk, so the parsing happens while Redis answers (docs/performance.md).
    It is a guess, and only that: the parsed request is what gets decided, and
    a guess that differs from it is never used.
    """
    if chunk.find(b"\n\n") != len(chunk) - 2 or b"\nprotocol_state=RCPT\n" not in chunk:
        return None  # not one whole request, or not at RCPT
    start = chunk.find(b"\nclient_address=")
    if start < 0:
        return None
    start += len(b"\nclient_address=")
    return chunk[start : chunk.find(b"\n", start)].decode("utf-8", "replace")


def format_reply(action: str) -> bytes:
    """Encode the answer to one request."""
    return b"action=" + action.encode("utf-8") + b"\n\n"
