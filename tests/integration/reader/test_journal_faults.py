"""The reader loses no login: Redis killed and restarted under a stream of logins, the
reader killed with SIGKILL at random moments and restarted. Every login still within
its window must end up in Redis, and the test counts them."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journalfiles import JournalWriter, ReaderProcess, dovecot_login, write_journal
from support import AuditSink, RedisServer, write_config

STREAM = 300
"""Logins per stream: enough that faults land mid-stream, few enough for a quick test."""


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """The test's redis-server with an fsync'ed append-only file.

    Without persistence a restarted Redis is empty and the test could not tell a
    login the reader lost from one Redis forgot.
    """
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def reader(
    tmp_path: Path, durable_redis: RedisServer, audit_sink: AuditSink
) -> Iterator[ReaderProcess]:
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{durable_redis.url}"\n')
    process = ReaderProcess(tmp_path, config, tmp_path / "journal", audit_sink.path)
    yield process
    process.stop()


def stream_addresses(count: int) -> list[str]:
    return [f"2001:db8:5::{index:x}" for index in range(1, count + 1)]


def stream_logins(writer: JournalWriter, addresses: list[str], pause: float) -> threading.Thread:
    """Append one login per address, `pause` seconds apart, in a background thread."""

    def write() -> None:
        for address in addresses:
            writer.append(dovecot_login(address))
            time.sleep(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def wait_for_all(server: RedisServer, addresses: list[str], timeout: float = 30) -> set[str]:
    """Wait until every address is authorized; return the authorized set either way."""
    wanted = {f"pbs:client:{address}" for address in addresses}
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while time.monotonic() < deadline:
        found = set(server.client().keys("pbs:client:*"))
        if wanted <= found:
            break
        time.sleep(0.05)
    return {key.removeprefix("pbs:client:") for key in found}


def start_following(reader: ReaderProcess) -> JournalWriter:
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.1")])
    reader.start()
    reader.wait_status("Following the journal:")
    return JournalWriter(reader.directory / "system.journal")


def test_logins_while_redis_is_down_are_kept_and_written_when_it_returns(
    reader: ReaderProcess, durable_redis: RedisServer
) -> None:
    writer = start_following(reader)
    cursor = reader.cursor
    durable_redis.stop()
    addresses = stream_addresses(20)
    writer.append(*(dovecot_login(address) for address in addresses))
    reader.wait_status("Waiting for Redis")
    time.sleep(0.3)
    assert reader.cursor == cursor  # nothing acknowledged, nothing skipped
    durable_redis.start()
    found = wait_for_all(durable_redis, addresses)
    writer.close()
    assert len(found & set(addresses)) == 20
    reader.wait_status("Following the journal: 21 entries, 21 logins: 21 authorized")


def test_redis_killed_and_restarted_during_a_stream_loses_no_login(
    reader: ReaderProcess, durable_redis: RedisServer
) -> None:
    writer = start_following(reader)
    addresses = stream_addresses(STREAM)
    thread = stream_logins(writer, addresses, pause=0.002)
    for _ in range(2):
        time.sleep(0.2)
        durable_redis.stop()
        time.sleep(0.3)
        durable_redis.start()
    thread.join()
    found = wait_for_all(durable_redis, addresses)
    writer.close()
    assert len(found & set(addresses)) == STREAM, sorted(set(addresses) - found)[:5]


def test_reader_killed_with_sigkill_during_a_stream_loses_no_login(
    reader: ReaderProcess, durable_redis: RedisServer
) -> None:
    writer = start_following(reader)
    addresses = stream_addresses(STREAM)
    thread = stream_logins(writer, addresses, pause=0.002)
    randomness = random.Random(3)
    for _ in range(3):
        time.sleep(randomness.uniform(0.05, 0.25))
        reader.kill()
        reader.start()
    thread.join()
    found = wait_for_all(durable_redis, addresses)
    writer.close()
    assert len(found & set(addresses)) == STREAM, sorted(set(addresses) - found)[:5]


def test_ready_does_not_wait_for_redis_and_status_says_why_nothing_is_written(
    reader: ReaderProcess, durable_redis: RedisServer
) -> None:
    """`systemctl start`, and with it the package's postinst, must not hang on a dead store."""
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.2")])
    durable_redis.stop()
    reader.start(wait_ready=False)
    reader.wait_ready()
    status = reader.wait_status("Waiting for Redis")
    assert "reaching Redis" in status["STATUS"]
    durable_redis.start()
    assert wait_for_all(durable_redis, ["192.0.2.2"]) == {"192.0.2.2"}


def test_a_full_store_is_named_in_one_line_and_the_login_waits(
    reader: ReaderProcess, durable_redis: RedisServer
) -> None:
    """noeviction: a full store refuses the write; the reader says so and keeps the login."""
    durable_redis.client().config_set("maxmemory", "1")
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.3")])
    reader.start()
    # redis-py 4.3: "ResponseError: OOM command not allowed when used memory > 'maxmemory'."
    # redis-py 6.1: "OutOfMemoryError: command not allowed when used memory > ..."
    status = reader.wait_status("command not allowed when used memory")["STATUS"]
    assert "\n" not in status and "local current" not in status
    durable_redis.client().config_set("maxmemory", "0")
    assert wait_for_all(durable_redis, ["192.0.2.3"]) == {"192.0.2.3"}
