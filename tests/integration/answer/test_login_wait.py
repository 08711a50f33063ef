"""A relay sent the instant its login reached the journal (issue #22): the handler and the
server wait for it, bounded, and wake the reader; the old line and inbound mail never wait.

The handler and the server run as their units' commands under systemd-socket-activate
against a real redis-server; the "reader" here is a real wake-up socket (wakeup.WakeSocket)
that counts what the handlers send, and the login arrives as the reader would write it,
a key set by another thread while the request waits.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService, ServerService
from support import AuditSink, RedisServer, write_config

from pbs_activated import wakeup
from pbs_activated.answer.decision import RELAY_CONTEXT
from pbs_activated.store import keys

WAIT = 0.4
"""`[policy] login_wait` of these tests."""

SLACK = 0.25
"""What a loaded two-core test machine may add to a wait."""

GRANTED = "192.0.2.10"
LATE = "192.0.2.20"
STRANGER = "192.0.2.99"


@pytest.fixture
def wait_config(tmp_path: Path, redis_server: RedisServer) -> Path:
    return write_config(
        tmp_path / "wait.toml",
        f'[redis]\nurl = "{redis_server.url}"\n[policy]\nlogin_wait = {WAIT}\n',
    )


@pytest.fixture
def handlers(tmp_path: Path, wait_config: Path, audit_sink: AuditSink) -> Iterator[PolicyService]:
    with PolicyService(tmp_path, wait_config, audit_sink.path) as service:
        yield service


def granted_later(redis_server: RedisServer, address: str, after: float) -> threading.Timer:
    """Authorize `address` `after` seconds from now, as the reader would."""

    def write() -> None:
        redis_server.client().set(keys.client_key(address), "alice", px=600_000)

    timer = threading.Timer(after, write)
    timer.start()
    return timer


def timed_ask(client, address: str, context: str = RELAY_CONTEXT) -> tuple[str | None, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    extra = {"policy_context": context} if context else {}
    action = client.ask(client_address=address, **extra)
    return action, time.monotonic() - started


def test_a_login_that_arrives_while_the_relay_waits_is_answered_ok(
    handlers: PolicyService, redis_server: RedisServer
) -> None:
    timer = granted_later(redis_server, LATE, 0.1)
    client = handlers.connect()
    action, took = timed_ask(client, LATE)
    timer.join()
    assert action == "OK"
    assert 0.1 <= took < 0.1 + SLACK


def test_a_stranger_waits_once_per_address_and_connection_then_gets_dunno(
    handlers: PolicyService,
) -> None:
    client = handlers.connect()
    action, first = timed_ask(client, STRANGER)
    assert action == "DUNNO"
    assert WAIT <= first < WAIT + SLACK
    for _ in range(5):  # a stranger's session of many RCPTs waits once
        action, again = timed_ask(client, STRANGER)
        assert (action, again < SLACK) == ("DUNNO", True)


def test_requests_of_the_old_line_never_wait(handlers: PolicyService) -> None:
    client = handlers.connect()
    for context in ("", "submission"):
        action, took = timed_ask(client, STRANGER, context)
        assert (action, took < SLACK) == ("DUNNO", True)


def test_an_authorized_address_does_not_wait(
    handlers: PolicyService, redis_server: RedisServer
) -> None:
    redis_server.client().set(keys.client_key(GRANTED), "alice", px=600_000)
    action, took = timed_ask(handlers.connect(), GRANTED)
    assert (action, took < SLACK) == ("OK", True)


def test_the_wait_wakes_the_reader_and_sends_it_nothing(handlers: PolicyService) -> None:
    reader_end = wakeup.WakeSocket(str(handlers.wake_path))
    try:
        timed_ask(handlers.connect(), STRANGER)
        raw = os.read(reader_end.fileno(), 65536)
        assert raw == b""  # an empty datagram: no address, no answer
        assert reader_end.drain() >= 1  # woken again before the later looks
    finally:
        reader_end.close()


def test_the_audit_entry_says_how_long_the_request_waited(
    handlers: PolicyService, audit_sink: AuditSink
) -> None:
    timed_ask(handlers.connect(), STRANGER)
    entry = next(e for e in audit_sink.collect(until=1) if e.get("PBS_ACTION") == "DUNNO")
    assert WAIT * 1000 <= int(entry["PBS_WAITED_MS"]) < (WAIT + SLACK) * 1000
    assert "after waiting" in entry["MESSAGE"]


def test_the_wake_up_socket_is_writable_by_its_group_only(tmp_path: Path) -> None:
    path = tmp_path / "wake.sock"
    path.write_text("a socket left by a reader that was killed")
    reader_end = wakeup.WakeSocket(str(path))
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o620
    finally:
        reader_end.close()
    assert not path.exists()


def test_waking_a_missing_reader_is_harmless(tmp_path: Path) -> None:
    wakeup.wake(str(tmp_path / "nobody-listens"))


def test_the_server_serves_other_connections_while_one_waits(
    tmp_path: Path, wait_config: Path, audit_sink: AuditSink, redis_server: RedisServer
) -> None:
    redis_server.client().set(keys.client_key(GRANTED), "alice", px=600_000)
    with ServerService(tmp_path, wait_config, audit_sink.path) as server:
        waiting, other = server.connect(), server.connect()
        timer = granted_later(redis_server, LATE, 0.2)
        results: dict[str, tuple[str | None, float]] = {}
        thread = threading.Thread(target=lambda: results.update(late=timed_ask(waiting, LATE)))
        thread.start()
        time.sleep(0.05)
        for _ in range(5):  # answered at once, while the other connection waits
            action, took = timed_ask(other, GRANTED)
            assert (action, took < 0.1) == ("OK", True)
        thread.join()
        timer.join()
        action, took = results["late"]
        assert action == "OK"
        assert 0.2 <= took < 0.2 + SLACK
        action, took = timed_ask(waiting, STRANGER)
        assert action == "DUNNO"
        assert WAIT <= took < WAIT + SLACK
        action, took = timed_ask(waiting, STRANGER)
        assert (action, took < SLACK) == ("DUNNO", True)
