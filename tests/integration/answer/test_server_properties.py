"""The running policy server fed random bytes on several connections at once, in random
chunkings: each connection gets exactly the answers that the parser and `decide` give
for its own bytes, whatever the others send, and the server stays up."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from activation import ServerService
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import AuditSink, RedisServer, encode_request, run_cli

from pbs_activated.answer import LimitExceeded, RequestParser, format_reply
from pbs_activated.answer.decision import decide
from pbs_activated.config import PolicySettings

GRANTED = {"192.0.2.10": "alice"}
MAX_LINE_LENGTH = 256
MAX_REQUEST_SIZE = 2048

pieces = st.one_of(
    st.just(encode_request(client_address="192.0.2.10")),
    st.just(encode_request(client_address="::ffff:192.0.2.10")),
    st.just(encode_request(client_address="192.0.2.11")),
    st.just(encode_request(client_address="192.0.2.10", protocol_state="DATA")),
    st.binary(max_size=64),
    st.sampled_from([b"\n", b"\n\n", b"client_address=192.0.2.10\n", b"protocol_state=RCPT\n"]),
)
streams = st.lists(pieces, max_size=10).map(b"".join)
cuts = st.lists(st.integers(min_value=1, max_value=200), max_size=6)


def expected_answers(data: bytes) -> bytes:
    """What one connection sending `data` must receive: the answers to its complete
    requests, up to a request or line over the limits (which closes the connection)."""
    parser = RequestParser(MAX_LINE_LENGTH, MAX_REQUEST_SIZE)
    try:
        requests = parser.feed(data)
    except LimitExceeded as error:
        requests = error.complete
    policy = PolicySettings()
    return b"".join(format_reply(decide(r, policy, GRANTED.get).action) for r in requests)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, position = [], 0
    for size in sizes:
        pieces.append(data[position : position + size])
        position += size
    return [*pieces, data[position:]]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerService]:
    directory = tmp_path_factory.mktemp("server-fuzz")
    redis_server = RedisServer(directory)
    redis_server.start()
    config = directory / "c.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n'
        f"[policy]\nmax_line_length = {MAX_LINE_LENGTH}\nmax_request_size = {MAX_REQUEST_SIZE}\n"
        "idle_timeout = 600\n"
    )
    sink = AuditSink(directory / "journal.sock")
    run_cli("grant", "192.0.2.10", config=config)
    service = ServerService(directory, config, sink.path)
    yield service
    service.stop()
    sink.close()
    redis_server.stop()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(streams, cuts), min_size=1, max_size=4))
def test_every_connection_gets_exactly_its_own_answers(
    service: ServerService, conversations: list[tuple[bytes, list[int]]]
) -> None:
    connections = []
    for _ in conversations:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(10)
        connection.connect(str(service.path))
        connections.append(connection)
    queues = [chunks(data, sizes) for data, sizes in conversations]
    # Interleaved: one chunk of each connection in turn.
    for turn in range(max(len(queue) for queue in queues)):
        for connection, queue in zip(connections, queues, strict=True):
            if turn < len(queue):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a limit
                    connection.sendall(queue[turn])
    for connection in connections:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_WR)
    for connection, (data, _) in zip(connections, conversations, strict=True):
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        connection.close()
        assert received == expected_answers(data)
    assert service.serving()
