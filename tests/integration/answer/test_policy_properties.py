"""The running handler fed random bytes in random chunkings: it never crashes or
hangs, and never answers OK to more requests than were granted ones."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from activation import PolicyService
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import AuditSink, RedisServer, encode_request, run_cli

GRANTED_REQUEST = encode_request(client_address="192.0.2.10")
pieces = st.one_of(
    st.just(GRANTED_REQUEST),
    st.just(encode_request(client_address="192.0.2.11")),
    st.just(encode_request(client_address="192.0.2.10", protocol_state="DATA")),
    st.binary(max_size=64),
    st.sampled_from([b"\n", b"\n\n", b"client_address=192.0.2.10\n", b"protocol_state=RCPT\n"]),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyService]:
    directory = tmp_path_factory.mktemp("fuzz")
    redis_server = RedisServer(directory)
    redis_server.start()
    config = directory / "c.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n'
        "[policy]\nmax_line_length = 256\nmax_request_size = 2048\n"
    )
    sink = AuditSink(directory / "journal.sock")
    run_cli("grant", "192.0.2.10", config=config)
    service = PolicyService(directory, config, sink.path)
    yield service
    service.stop()
    sink.close()
    redis_server.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(pieces, max_size=12), st.lists(st.integers(min_value=1, max_value=200), max_size=8))
def test_random_input_never_crashes_hangs_or_permits_wrongly(
    service: PolicyService, parts: list[bytes], sizes: list[int]
) -> None:
    data = b"".join(parts)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(str(service.path))
    position = 0
    for size in sizes or [len(data) or 1]:
        connection.sendall(data[position : position + size])
        position += size
    connection.sendall(data[position:])
    connection.shutdown(socket.SHUT_WR)
    received = b""
    started = time.monotonic()
    while chunk := connection.recv(65536):
        received += chunk
    connection.close()
    assert time.monotonic() - started < 10
    replies = [r for r in received.split(b"\n\n") if r]
    assert all(reply.startswith(b"action=") for reply in replies)
    assert replies.count(b"action=OK") <= data.count(b"client_address=192.0.2.10\n")
    assert replies.count(b"action=OK") <= parts.count(GRANTED_REQUEST) + data.count(
        b"protocol_state=RCPT\n"
    )
    assert service.wait_for_no_handlers()
