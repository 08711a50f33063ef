"""The reader tells a store that refuses it from one that is away, and loses no login to
either: a wrong password or an ACL without the authorize script is a refusal, logged
at error priority once and shown as such, retried until an administrator mends the
store at runtime; a loading store is waited for, as a stopped one is."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journalfiles import ReaderProcess, dovecot_login, write_journal
from support import AuditSink, RedisServer, write_config

USER = "pbs-test-reader"
SECRET = "reader-secret"
REFUSAL = "the store refuses the reader"
NO_SCRIPT = "no permissions to run the 'eval' command"
"""Redis's reason for NOPERM (redis-py names the error, and drops the code from its text)."""


@pytest.fixture
def reader(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> Iterator[ReaderProcess]:
    """A reader (not yet started) logging in as USER with SECRET."""
    url = redis_server.url.replace("unix://", f"unix://{USER}:{SECRET}@")
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{url}"\ntimeout = 1.0\n')
    process = ReaderProcess(tmp_path, config, tmp_path / "journal", audit_sink.path)
    yield process
    process.stop()


def acl_user(server: RedisServer, *rules: str) -> None:
    """Create or change USER at runtime, as an administrator mending the store would."""
    server.command("ACL", "SETUSER", USER, "on", "~*", *rules)


def wait_for_key(server: RedisServer, address: str, timeout: float = 15.0) -> None:
    from redis.exceptions import BusyLoadingError

    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.exists(f"pbs:client:{address}"):
                return
        except BusyLoadingError:
            pass
        assert time.monotonic() < deadline, f"{address} was not authorized within {timeout} s"
        time.sleep(0.05)


def refused_for(reader: ReaderProcess, seconds: int) -> str:
    """Wait until STATUS says the store has refused the reader for `seconds`; return it."""
    assert reader.notify is not None
    pattern = re.compile(r"^Refused by the store \(.*\) since (\d+) s")

    def long_enough(message: dict[str, str]) -> bool:
        found = pattern.match(message.get("STATUS", ""))
        return found is not None and int(found.group(1)) >= seconds

    return reader.notify.wait_for(long_enough, timeout=seconds + 10)["STATUS"]


def test_an_acl_without_the_script_is_a_refusal_and_the_login_waits_until_it_is_mended(
    reader: ReaderProcess, redis_server: RedisServer
) -> None:
    acl_user(redis_server, f">{SECRET}", "+@all", "-eval")
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.110")])
    reader.start()
    status = refused_for(reader, 3)  # retried at least twice meanwhile
    assert NO_SCRIPT in status and "authorizing 192.0.2.110" in status
    refusals = [line for line in reader.output().splitlines() if REFUSAL in line]
    assert len(refusals) == 1, refusals  # once per episode, not once per retry
    assert refusals[0].startswith("<3>")  # error priority, for journald
    assert NO_SCRIPT in refusals[0]
    assert "Waiting for Redis" not in reader.output()
    assert not redis_server.client().exists("pbs:client:192.0.2.110")
    acl_user(redis_server, "+eval")
    wait_for_key(redis_server, "192.0.2.110")
    reader.wait_status("Following the journal: 1 entries, 1 logins: 1 authorized")
    assert "the store accepts the reader again" in reader.output()


def test_a_wrong_password_is_a_refusal_until_the_store_takes_it(
    reader: ReaderProcess, redis_server: RedisServer
) -> None:
    acl_user(redis_server, ">another-secret", "+@all")
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.111")])
    reader.start()
    status = reader.wait_status("Refused by the store")["STATUS"]
    assert "reaching Redis" in status
    assert re.search("WRONGPASS|invalid username-password", status), status
    acl_user(redis_server, f">{SECRET}")
    wait_for_key(redis_server, "192.0.2.111")


def test_a_refusal_that_becomes_an_outage_and_a_refusal_again_is_said_each_time(
    reader: ReaderProcess, redis_server: RedisServer
) -> None:
    acl_user(redis_server, f">{SECRET}", "+@all", "-eval")
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.112")])
    reader.start()
    reader.wait_status("Refused by the store")
    redis_server.stop()
    reader.wait_status("Waiting for Redis")
    assert "no longer refuses the reader but is unavailable" in reader.output()
    redis_server.start()  # empty: USER is gone, so its login is refused again
    assert reader.notify is not None
    reader.notify.forget()
    reader.wait_status("Refused by the store")
    assert reader.output().count(REFUSAL) == 2
    acl_user(redis_server, f">{SECRET}", "+@all")
    wait_for_key(redis_server, "192.0.2.112")


def test_a_loading_store_is_waited_for_not_refused(tmp_path: Path, audit_sink: AuditSink) -> None:
    """LOADING: slowed with redis-server's own key-load-delay, so that it lasts seconds."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    # Each key past loading-process-events-interval-bytes, so it answers between keys.
    server.client().mset({f"filler:{index}": "x" * 2048 for index in range(400)})
    server.client().save()
    server.stop()
    loading = subprocess.Popen(
        [
            "redis-server",
            "--port", "0",
            "--unixsocket", str(server.socket_path),
            "--save", "",
            "--dir", str(directory),
            "--key-load-delay", "10000",  # µs per key: 400 keys, 4 s
            "--loading-process-events-interval-bytes", "1024",
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{server.url}"\n')
    reader = ReaderProcess(tmp_path, config, tmp_path / "journal", audit_sink.path)
    write_journal(reader.directory / "system.journal", [dovecot_login("192.0.2.113")])
    try:
        reader.start()
        status = reader.wait_status("loading the dataset")["STATUS"]
        assert status.startswith("Waiting for Redis ("), status
        wait_for_key(server, "192.0.2.113")
    finally:
        reader.stop()
        loading.kill()
        loading.wait()
    assert REFUSAL not in reader.output()
