"""The named limits against what Postfix may really send (issue #13).

Postfix passes on what smtpd accepted: `helo_name`, `sender` and `recipient` up
to `line_length_limit` (2048 by default, raised by sites), `policy_context` as
the administrator wrote it. Values of 8 KiB and 64 KiB, and requests larger than
one read (handler.READ_SIZE, server.READ_SIZE), must be answered with the
requests after them on the same connection; only a line beyond our own limit
(defaults.MAX_LINE_LENGTH) closes the connection, without an answer, and is
logged. The same for the handler (Accept=yes) and the server (Accept=no).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyClient, PolicyService, ServerService
from support import AuditSink, encode_request, run_cli

from pbs_activated.answer import handler, server
from pbs_activated.config import defaults

GRANTED = "192.0.2.10"
UNKNOWN = "192.0.2.99"
KIB = 1024


@pytest.fixture(params=["handler", "server"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, config_file: Path, audit_sink: AuditSink
) -> Iterator[PolicyService | ServerService]:
    """The handler (one per connection) or the server (one for all), on the test's Redis."""
    run_cli("grant", GRANTED, "--user", "alice", config=config_file)
    kind = PolicyService if request.param == "handler" else ServerService
    with kind(tmp_path, config_file, audit_sink.path) as running:
        wait_until_listening(running)
        yield running


def wait_until_listening(service: PolicyService | ServerService, timeout: float = 10) -> None:
    """Connect once and leave: the socket's path exists from bind(), before listen(),
    so a connection right after the start may be refused (ECONNREFUSED)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            service.connect().close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def ask_in_background(client: PolicyClient, data: bytes) -> str | None:
    """Send `data` while reading the answer: a request bigger than the socket's
    buffers is taken in as it is parsed, so sending it all first could block."""
    sender = threading.Thread(target=client.send_until_closed, args=(data,))
    sender.start()
    try:
        return client.reply()
    finally:
        sender.join(timeout=30)


def limit_entries(sink: AuditSink, timeout: float = 5) -> list[dict[str, str]]:
    """The `PBS_ERROR=limit` audit entries, once there is one (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [entry for entry in list(sink.entries) if entry.get("PBS_ERROR") == "limit"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_the_defaults_are_far_above_postfix_s_default_line_length_limit() -> None:
    postfix_default_line_length_limit = 2048
    assert 64 * postfix_default_line_length_limit <= defaults.MAX_LINE_LENGTH
    assert defaults.MAX_REQUEST_SIZE >= 4 * defaults.MAX_LINE_LENGTH
    assert max(handler.READ_SIZE, server.READ_SIZE) < defaults.MAX_LINE_LENGTH


@pytest.mark.parametrize("size", [8 * KIB, 64 * KIB], ids=["8KiB", "64KiB"])
@pytest.mark.parametrize("attribute", ["sender", "recipient", "policy_context", "helo_name"])
def test_a_long_attribute_value_is_answered_and_so_are_the_requests_after_it(
    service: PolicyService | ServerService, attribute: str, size: int
) -> None:
    client = service.connect()
    value = ("x" * size) + "@remote.test" if attribute in ("sender", "recipient") else "x" * size
    assert ask_in_background(client, encode_request(**{attribute: value})) == "OK"
    assert client.ask(client_address=UNKNOWN) == "DUNNO"
    assert client.ask() == "OK"


def test_a_request_larger_than_several_reads_is_answered(
    service: PolicyService | ServerService,
) -> None:
    """Four attributes at three quarters of the line limit: many reads, one request."""
    value = "v" * (defaults.MAX_LINE_LENGTH * 3 // 4)
    big = encode_request(helo_name=value, sender=value, recipient=value, policy_context=value)
    assert len(big) > 10 * max(handler.READ_SIZE, server.READ_SIZE)
    client = service.connect()
    assert ask_in_background(client, big) == "OK"
    assert client.ask() == "OK"


def test_a_long_request_pipelined_between_short_ones_gets_every_answer_in_order(
    service: PolicyService | ServerService,
) -> None:
    client = service.connect()
    pipelined = (
        encode_request(client_address=UNKNOWN)
        + encode_request(policy_context="c" * (100 * KIB))
        + encode_request(client_address=UNKNOWN)
        + encode_request()
    )
    sender = threading.Thread(target=client.send, args=(pipelined,))
    sender.start()
    answers = [client.reply() for _ in range(4)]
    sender.join(timeout=30)
    assert answers == ["DUNNO", "OK", "DUNNO", "OK"]


def test_a_line_at_the_limit_is_answered(service: PolicyService | ServerService) -> None:
    client = service.connect()
    line_overhead = len("policy_context=")
    value = "p" * (defaults.MAX_LINE_LENGTH - line_overhead)
    assert ask_in_background(client, encode_request(policy_context=value)) == "OK"
    assert client.ask() == "OK"


def test_a_line_beyond_the_limit_closes_the_connection_without_an_answer(
    service: PolicyService | ServerService, audit_sink: AuditSink
) -> None:
    client = service.connect()
    assert client.ask() == "OK"
    value = "p" * (defaults.MAX_LINE_LENGTH + 1)
    assert ask_in_background(client, encode_request(policy_context=value)) is None
    limits = limit_entries(audit_sink)
    assert limits and f"longer than {defaults.MAX_LINE_LENGTH}" in limits[0]["MESSAGE"]
    assert service.connect().ask() == "OK", "a new connection is answered"


def test_a_request_beyond_the_limit_closes_the_connection_without_an_answer(
    service: PolicyService | ServerService, audit_sink: AuditSink
) -> None:
    client = service.connect()
    value = "q" * (defaults.MAX_LINE_LENGTH // 2)
    count = 2 * defaults.MAX_REQUEST_SIZE // len(value)
    extra = {f"x_attribute{n}": value for n in range(count)}
    assert ask_in_background(client, encode_request(**extra)) is None
    limits = limit_entries(audit_sink)
    assert limits and f"larger than {defaults.MAX_REQUEST_SIZE}" in limits[0]["MESSAGE"]
    assert service.connect().ask() == "OK", "a new connection is answered"
