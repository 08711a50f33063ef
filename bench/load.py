"""A load client that behaves like Postfix's smtpd towards a policy service.

Each smtpd process holds one connection and sends one request at a time,
waiting for the answer before the next. The figures:

- `first_answer_times`: connect, send a request, wait for its answer; repeated
  on fresh connections one after another. For a per-connection handler this is
  its start-up, the delay a new smtpd process sees.
- `storm`: many new connections at once, each with one request, until all are
  answered: a burst of new smtpd processes.
- `steady`: C established connections sending R requests each, one at a time.
- `held_connections`: connections kept open after one answer, so the handlers
  behind them can be measured.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cpu import CpuMeter
from support import encode_request

ANSWER_TIMEOUT = 30.0

REQUEST = encode_request()


class WrongAnswer(Exception):
    """The server answered something else than expected, or closed the connection."""


class Connection:
    """One smtpd process's connection to the policy service."""

    def __init__(self, path: Path, expected: bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.settimeout(ANSWER_TIMEOUT)
        self.socket.connect(str(path))
        self.expected = expected
        self.buffer = b""

    def ask(self, request: bytes = REQUEST) -> None:
        """Send one request and wait for its answer (blocking)."""
        self.socket.sendall(request)
        while not self.receive():
            pass

    def receive(self) -> bool:
        """Read what is there; True once a whole answer has arrived (and was checked)."""
        chunk = self.socket.recv(4096)
        if not chunk:
            raise WrongAnswer("the server closed the connection before answering")
        self.buffer += chunk
        end = self.buffer.find(b"\n\n")
        if end < 0:
            return False
        answer, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
        if answer != self.expected:
            raise WrongAnswer(f"expected {self.expected!r}, got {answer!r}")
        return True

    def close(self) -> None:
        self.socket.close()


def first_answer_times(path: Path, expected: bytes, count: int) -> list[float]:
    """Seconds from connect to first answer, on `count` fresh connections in turn."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection = Connection(path, expected)
        connection.ask()
        times.append(time.perf_counter() - started)
        connection.close()
    return times


def storm(path: Path, expected: bytes, count: int) -> float:
    """Seconds until `count` connections opened at once have all been answered."""
    started = time.perf_counter()
    connections = [Connection(path, expected) for _ in range(count)]
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            connection.socket.sendall(REQUEST)
            selector.register(connection.socket, selectors.EVENT_READ, connection)
        waiting = count
        while waiting:
            events = selector.select(ANSWER_TIMEOUT)
            if not events:
                raise WrongAnswer(f"{waiting} of {count} connections unanswered")
            for key, _ in events:
                if key.data.receive():
                    selector.unregister(key.fileobj)
                    waiting -= 1
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return elapsed


def steady(
    path: Path, expected: bytes, connections: int, requests: int, cpu: CpuMeter | None = None
) -> float:
    """Requests per second of `connections` established connections sending `requests` each.

    Every connection first gets one answer, so a per-connection handler has
    started and reached Redis before the clock starts; `cpu`, if given, meters
    the same span.
    """
    with held_connections(path, expected, connections) as held:
        remaining = {connection: requests for connection in held}
        with selectors.DefaultSelector() as selector:
            if cpu is not None:
                cpu.start()
            started = time.perf_counter()
            for connection in held:
                selector.register(connection.socket, selectors.EVENT_READ, connection)
                connection.socket.sendall(REQUEST)
            active = len(held)
            while active:
                events = selector.select(ANSWER_TIMEOUT)
                if not events:
                    raise WrongAnswer("no answer within the timeout")
                for key, _ in events:
                    connection = key.data
                    if not connection.receive():
                        continue
                    remaining[connection] -= 1
                    if remaining[connection]:
                        connection.socket.sendall(REQUEST)
                    else:
                        selector.unregister(connection.socket)
                        active -= 1
            elapsed = time.perf_counter() - started
            if cpu is not None:
                cpu.stop(connections * requests)
    return connections * requests / elapsed


@contextmanager
def held_connections(path: Path, expected: bytes, count: int) -> Iterator[list[Connection]]:
    """`count` connections, each answered once, kept open until the block ends."""
    connections = [Connection(path, expected) for _ in range(count)]
    try:
        for connection in connections:
            connection.ask()
        yield connections
    finally:
        for connection in connections:
            connection.close()


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000
