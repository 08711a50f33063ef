"""The handler as Postfix meets it: one process per connection under
systemd-socket-activate, answering from a real redis-server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from support import AuditSink, RedisServer, encode_request, run_cli, write_config

from pbs_activated.config import defaults

TOO_LONG = b"x" * (defaults.MAX_LINE_LENGTH + 1000)
"""A value past the line limit (which is far above what Postfix sends: defaults.py)."""
TOO_LARGE = b"".join(
    b"attribute%d=%s\n" % (n, b"v" * (defaults.MAX_LINE_LENGTH // 2))
    for n in range(2 * defaults.MAX_REQUEST_SIZE // defaults.MAX_LINE_LENGTH + 2)
)
"""Lines each within the line limit that together pass the request limit."""


def grant(config: Path, address: str, *options: str) -> None:
    run_cli("grant", address, *options, config=config)


def test_many_requests_on_one_connection_are_all_answered(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10", "--user", "alice")
    client = policy_service.connect()
    answers = [client.ask(recipient=f"r{n}@remote.test") for n in range(50)]
    assert answers == ["OK"] * 50
    assert len(policy_service.handler_pids()) == 1


def test_a_request_split_over_many_writes_is_answered_once(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10")
    client = policy_service.connect()
    data = encode_request()
    for index in range(0, len(data), 7):
        client.send(data[index : index + 7])
        time.sleep(0.001)
    assert client.reply() == "OK"
    assert client.ask(client_address="192.0.2.99") == "DUNNO"


def test_pipelined_requests_in_one_write_get_answers_in_order(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10")
    client = policy_service.connect()
    addresses = ["192.0.2.10", "192.0.2.99", "192.0.2.10", "2001:db8::99"]
    client.send(b"".join(encode_request(client_address=a) for a in addresses))
    assert [client.reply() for _ in addresses] == ["OK", "DUNNO", "OK", "DUNNO"]


@pytest.mark.parametrize(
    "state", ["CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN"]
)
def test_only_rcpt_decides(policy_service: PolicyService, config_file: Path, state: str) -> None:
    grant(config_file, "192.0.2.10")
    expected = "OK" if state == "RCPT" else "DUNNO"
    assert policy_service.connect().ask(protocol_state=state) == expected


def test_ipv6_grants_match_any_spelling(policy_service: PolicyService, config_file: Path) -> None:
    grant(config_file, "2001:0DB8:0:0::10")
    client = policy_service.connect()
    assert client.ask(client_address="2001:db8::10") == "OK"
    assert client.ask(client_address="2001:db8::11") == "DUNNO"


def test_an_ipv4_mapped_client_matches_its_ipv4_grant(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10")
    assert policy_service.connect().ask(client_address="::ffff:192.0.2.10") == "OK"


def test_malformed_requests_are_answered_but_never_ok(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10")
    client = policy_service.connect()
    client.send(
        b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
        b"client_address=192.0.2.10\njunk line\n\n"
    )
    assert client.reply() == "DUNNO"
    client.send(b"request=other\nprotocol_state=RCPT\nclient_address=192.0.2.10\n\n")
    assert client.reply() == "DUNNO"
    client.send(
        b"\xff\xfe\xfd=\x00\x01\nrequest=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\n\n"
    )
    assert client.reply() == "OK"
    assert client.ask(client_address="192.0.2.10") == "OK"


def test_an_oversized_line_closes_the_connection_without_an_answer(
    policy_service: PolicyService, audit_sink: AuditSink
) -> None:
    client = policy_service.connect()
    client.send_until_closed(b"request=smtpd_access_policy\nsender=" + TOO_LONG + b"\n\n")
    assert client.reply() is None
    errors = [e for e in audit_sink.collect(until=1) if e.get("PBS_ERROR") == "limit"]
    assert errors and f"longer than {defaults.MAX_LINE_LENGTH}" in errors[0]["MESSAGE"]
    assert policy_service.wait_for_no_handlers()


def test_an_oversized_request_closes_the_connection_without_an_answer(
    policy_service: PolicyService,
) -> None:
    client = policy_service.connect()
    client.send_until_closed(b"request=smtpd_access_policy\n" + TOO_LARGE + b"\n")
    assert client.reply() is None


def test_answers_before_an_oversized_request_are_still_given(policy_service: PolicyService) -> None:
    client = policy_service.connect()
    client.send_until_closed(encode_request() + b"sender=" + TOO_LONG + b"\n\n")
    assert client.reply() == "DUNNO"
    assert client.reply() is None


def test_an_authorization_expires_after_its_lifetime(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10", "--lifetime", "1")
    client = policy_service.connect()
    assert client.ask() == "OK"
    time.sleep(1.2)
    assert client.ask() == "DUNNO"


def test_a_revoked_address_is_refused_on_an_open_connection(
    policy_service: PolicyService, config_file: Path
) -> None:
    grant(config_file, "192.0.2.10")
    client = policy_service.connect()
    assert client.ask() == "OK"
    run_cli("revoke", "192.0.2.10", config=config_file)
    assert client.ask() == "DUNNO"


def test_redis_stopped_and_restarted_under_an_open_connection(
    policy_service: PolicyService, config_file: Path, redis_server: RedisServer
) -> None:
    grant(config_file, "192.0.2.10")
    client = policy_service.connect()
    assert client.ask() == "OK"
    redis_server.stop()
    started = time.monotonic()
    answer = client.ask()
    assert answer is not None and answer.startswith("DEFER_IF_REJECT ")
    assert time.monotonic() - started < 2
    assert client.ask(protocol_state="CONNECT") == "DUNNO"
    redis_server.start()
    grant(config_file, "192.0.2.10")
    assert client.ask() == "OK"
    assert policy_service.handler_pids()


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never answers: a hung Redis."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_redis_that_never_answers_gets_defer_within_two_seconds(
    tmp_path: Path, audit_sink: AuditSink, silent_redis: int
) -> None:
    config = write_config(
        tmp_path / "c.toml", f'[redis]\nurl = "redis://127.0.0.1:{silent_redis}/0"\n'
    )
    with PolicyService(tmp_path, config, audit_sink.path) as service:
        client = service.connect()
        started = time.monotonic()
        answer = client.ask()
        assert answer is not None and answer.startswith("DEFER_IF_REJECT ")
        assert time.monotonic() - started < 2


def test_a_broken_config_answers_defer_and_says_why(tmp_path: Path, audit_sink: AuditSink) -> None:
    config = write_config(tmp_path / "c.toml", "[authorization]\nlifetime = 'soon'\n")
    with PolicyService(tmp_path, config, audit_sink.path) as service:
        client = service.connect()
        assert (client.ask() or "").startswith("DEFER_IF_REJECT ")
        assert client.ask(protocol_state="CONNECT") == "DUNNO"
        entries = audit_sink.collect(until=3)
        assert any(e.get("PBS_ERROR") == "config" and "lifetime" in e["MESSAGE"] for e in entries)


def test_the_handler_exits_when_postfix_closes(policy_service: PolicyService) -> None:
    clients = [policy_service.connect() for _ in range(5)]
    for client in clients:
        assert client.ask() == "DUNNO"
    assert len(policy_service.handler_pids()) == 5
    for client in clients:
        client.close()
    assert policy_service.wait_for_no_handlers()


def test_the_handler_closes_an_idle_connection(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = write_config(
        tmp_path / "c.toml", f'[redis]\nurl = "{redis_server.url}"\n[policy]\nidle_timeout = 1\n'
    )
    with PolicyService(tmp_path, config, audit_sink.path) as service:
        client = service.connect()
        assert client.ask() == "DUNNO"
        assert client.closed_by_peer(timeout=3)
        assert service.wait_for_no_handlers()


def test_each_decision_is_one_audit_entry_with_its_fields(
    policy_service: PolicyService, config_file: Path, audit_sink: AuditSink
) -> None:
    grant(config_file, "192.0.2.10", "--user", "alice")
    client = policy_service.connect()
    assert (
        client.ask(sender="alice@example.test", recipient="bob@remote.test", queue_id="4XyZ")
        == "OK"
    )
    assert client.ask(client_address="192.0.2.99") == "DUNNO"
    entries = [e for e in audit_sink.collect(until=3) if "PBS_ACTION" in e]
    ok, dunno = entries[0], entries[1]
    assert ok["PBS_ACTION"] == "OK" and ok["PBS_USER"] == "alice"
    assert ok["PBS_CLIENT_ADDRESS"] == "192.0.2.10"
    assert (ok["PBS_SENDER"], ok["PBS_RECIPIENT"], ok["PBS_QUEUE_ID"]) == (
        "alice@example.test",
        "bob@remote.test",
        "4XyZ",
    )
    assert ok["PRIORITY"] == "6" and ok["SYSLOG_IDENTIFIER"] == "pbs-activated"
    assert dunno["PBS_ACTION"] == "DUNNO" and "PBS_USER" not in dunno


def test_the_handler_also_serves_a_pipe(config_file: Path, audit_sink: AuditSink) -> None:
    grant(config_file, "192.0.2.10")
    result = run_cli(
        "policy",
        config=config_file,
        input=encode_request() + encode_request(client_address="192.0.2.9"),
    )
    assert result.stdout == b"action=OK\n\naction=DUNNO\n\n"
