"""`pbs-activated journal` on real journal files: which entries authorize, until when,
and where it resumes. The reader runs as a process, as systemd runs it, with
$STATE_DIRECTORY, $NOTIFY_SOCKET and the audit socket pointing into the test."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journalfiles import (
    JournalWriter,
    ReaderProcess,
    dovecot_login,
    entry,
    forged,
    write_journal,
)
from support import REPO, AuditSink, RedisServer, run_cli, write_config

LIFETIME = 1800
SENTINEL = "198.51.100.254"
"""A last, valid login: once it is in Redis, every entry before it has been handled."""


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def reader(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink, journal_dir: Path
) -> Iterator[ReaderProcess]:
    """A reader (not yet started) with the default config pointing at the test's Redis."""
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{redis_server.url}"\n')
    process = ReaderProcess(tmp_path, config, journal_dir, audit_sink.path)
    yield process
    process.stop()


def configure(reader: ReaderProcess, redis_server: RedisServer, text: str) -> None:
    write_config(reader.config, f'[redis]\nurl = "{redis_server.url}"\n{text}')


def key(address: str) -> str:
    return f"pbs:client:{address}"


def wait_for_key(redis_server: RedisServer, address: str, timeout: float = 10.0) -> None:
    client = redis_server.client()
    deadline = time.monotonic() + timeout
    while not client.exists(key(address)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} was not authorized within {timeout} s")
        time.sleep(0.01)


def authorized(redis_server: RedisServer) -> set[str]:
    return {name.removeprefix("pbs:client:") for name in redis_server.client().keys("pbs:client:*")}


def run_until_sentinel(
    reader: ReaderProcess,
    redis_server: RedisServer,
    journal_dir: Path,
    records: list[dict[str, str]],
) -> set[str]:
    """Write the entries and a sentinel login, run the reader, return what it authorized."""
    write_journal(journal_dir / "system.journal", [*records, dovecot_login(SENTINEL)])
    reader.start()
    wait_for_key(redis_server, SENTINEL)
    return authorized(redis_server) - {SENTINEL}


def test_login_from_the_mail_server_unit_is_authorized_from_its_own_time(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    at = time.time() - 100
    run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.10", at=at)])
    client = redis_server.client()
    assert client.get(key("192.0.2.10")) == "alice"
    assert client.pexpiretime(key("192.0.2.10")) == int(at * 1_000_000) // 1000 + LIFETIME * 1000


def test_forged_lines_authorize_nothing(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    line = "pop3-login: Login: user=<mallory>, method=PLAIN, rip={}, lip=192.0.2.1, mpid=1"
    records = [
        forged(line.format("203.0.113.1")),  # logger -t dovecot in a login session
        entry(line.format("203.0.113.2"), unit=None),  # no unit at all
        entry(
            line.format("203.0.113.3"),
            unit="user@1000.service",  # a user's own "dovecot"
            _SYSTEMD_USER_UNIT="dovecot.service",
            _UID="1000",
        ),
        entry(line.format("203.0.113.4"), unit="cron.service", identifier="dovecot"),
        entry(line.format("203.0.113.5"), unit="dovecot.service.evil"),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == set()


def test_untrusted_transports_of_the_unit_authorize_nothing(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    line = "pop3-login: Login: user=<alice>, method=PLAIN, rip={}, lip=192.0.2.1"
    records = [
        entry(line.format("203.0.113.6"), transport="kernel"),
        entry(line.format("203.0.113.7"), transport="audit"),
        entry(line.format("203.0.113.8"), transport="driver"),
        entry(line.format("192.0.2.20"), transport="stdout"),  # Dovecot logging to stderr
        entry(line.format("192.0.2.21"), transport="journal"),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {
        "192.0.2.20",
        "192.0.2.21",
    }


def test_failed_and_aborted_logins_authorize_nothing(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    records = [
        entry(
            "pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, "
            "method=PLAIN, rip=203.0.113.9, lip=192.0.2.1, session=<a>"
        ),
        entry(
            "imap-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>, "
            "method=PLAIN, rip=203.0.113.10, lip=192.0.2.1, TLS, session=<b>"
        ),
        entry(
            "pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 0 secs): "
            "user=<alice>, method=PLAIN, rip=203.0.113.11, lip=192.0.2.1, session=<c>"
        ),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == set()


def test_injected_user_name_authorizes_only_the_real_address(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    injected = "x>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.1, mpid=1, session=<y"
    records = [
        dovecot_login("203.0.113.12", user=injected),
        dovecot_login("203.0.113.13", user="alice, rip=192.0.2.51"),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {
        "203.0.113.12",
        "203.0.113.13",
    }


def test_ipv6_and_ipv4_mapped_addresses_are_stored_normalised(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    records = [
        dovecot_login("2001:DB8:0::0:10"),
        dovecot_login("::ffff:192.0.2.30"),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {
        "2001:db8::10",
        "192.0.2.30",
    }


def test_loopback_link_local_and_ignored_networks_are_never_authorized(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    configure(reader, redis_server, '[authorization]\nignore = ["10.0.0.0/8", "2001:db8:1::/48"]\n')
    records = [
        dovecot_login(address)
        for address in (
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "10.1.2.3",
            "2001:db8:1::5",
            "192.0.2.32",
        )
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {"192.0.2.32"}


def test_courier_and_site_pattern_logins_from_their_units(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    configure(
        reader,
        redis_server,
        (
            '[journal]\nunits = ["dovecot.service", "courier-pop.service", "webmail.service"]\n'
            "pattern = 'webmail: login (?P<user>\\S+) from (?P<address>[0-9a-f.:]+)'\n"
        ),
    )
    records = [
        entry("LOGIN, user=bob, ip=[::ffff:192.0.2.40], port=[40211]", unit="courier-pop.service"),
        entry("LOGIN FAILED, user=bob, ip=[::ffff:203.0.113.40]", unit="courier-pop.service"),
        entry("webmail: login carol from 192.0.2.41", unit="webmail.service"),
        entry("webmail: login carol from 203.0.113.41 (denied)", unit="webmail.service"),
        entry("webmail: login eve from 203.0.113.42", unit="evil.service"),
    ]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {
        "192.0.2.40",
        "192.0.2.41",
    }


def test_imap_logins_are_skipped_when_imap_is_off(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    configure(reader, redis_server, "[journal]\nimap = false\n")
    records = [dovecot_login("192.0.2.42", protocol="imap"), dovecot_login("192.0.2.43")]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {"192.0.2.43"}


def test_real_debian_dovecot_entries_give_exactly_the_successful_logins(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    fixture = REPO / "tests" / "system" / "fixtures" / "dovecot-login-lines.txt"
    if not fixture.exists():
        pytest.skip("no recorded Dovecot lines")
    records = [
        json.loads(line) for line in fixture.read_text().splitlines() if line.startswith("{")
    ]
    shift = time.time() * 1_000_000 - int(records[-1]["__REALTIME_TIMESTAMP"]) - 60_000_000
    for record in records:  # recorded hours ago: move them into the window, order kept
        record.pop("__CURSOR")
        record["__REALTIME_TIMESTAMP"] = str(int(record["__REALTIME_TIMESTAMP"]) + int(shift))
        record["__MONOTONIC_TIMESTAMP"] = str(int(record["__MONOTONIC_TIMESTAMP"]))
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {
        "192.0.2.10",
        "192.0.2.11",
        "2001:db8::10",
        "2001:db8::11",
    }


def test_each_authorization_is_one_audit_entry_with_its_fields(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path, audit_sink: AuditSink
) -> None:
    at = int(time.time()) - 30
    run_until_sentinel(
        reader,
        redis_server,
        journal_dir,
        [dovecot_login("192.0.2.60", user="alice", at=at), dovecot_login("127.0.0.1")],
    )
    entries = audit_sink.collect(timeout=2, until=2)
    assert [e["PBS_CLIENT_ADDRESS"] for e in entries] == ["192.0.2.60", SENTINEL]
    first = entries[0]
    assert first["PBS_EVENT"] == "login"
    assert first["PBS_USER"] == "alice"
    assert first["PBS_SOURCE_UNIT"] == "dovecot.service"
    assert first["PBS_LOGIN_TIME"] == str(at)
    assert first["PBS_EXPIRES"] == str(at + LIFETIME)
    assert first["PRIORITY"] == "6"


def test_a_later_login_extends_the_window_and_an_earlier_one_does_not_shorten_it(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    now = time.time()
    run_until_sentinel(
        reader,
        redis_server,
        journal_dir,
        [
            dovecot_login("192.0.2.61", at=now - 300),
            dovecot_login("192.0.2.61", at=now - 100),
            dovecot_login("192.0.2.62", at=now - 50),
        ],
    )
    client = redis_server.client()
    assert client.pexpiretime(key("192.0.2.61")) == int((now - 100) * 1e6) // 1000 + LIFETIME * 1000
    writer = JournalWriter(journal_dir / "system.journal")
    writer.append(dovecot_login("192.0.2.62", at=now - 200), dovecot_login("192.0.2.63"))
    wait_for_key(redis_server, "192.0.2.63")
    writer.close()
    assert client.pexpiretime(key("192.0.2.62")) == int((now - 50) * 1e6) // 1000 + LIFETIME * 1000


def test_first_start_reads_one_lifetime_back(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    configure(reader, redis_server, "[authorization]\nlifetime = 60\n")
    now = time.time()
    records = [dovecot_login("192.0.2.70", at=now - 90), dovecot_login("192.0.2.71", at=now - 30)]
    assert run_until_sentinel(reader, redis_server, journal_dir, records) == {"192.0.2.71"}
    status = reader.wait_status("Following the journal:")["STATUS"]
    assert status.startswith("Following the journal: 2 entries")  # the old one was never read


def test_login_found_after_a_resume_but_already_past_its_window_is_skipped(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    from systemd import journal

    configure(reader, redis_server, "[authorization]\nlifetime = 60\n")
    now = time.time()
    write_journal(
        journal_dir / "system.journal",
        [
            entry("dovecot: master: Dovecot v2.3.19.1 starting up", at=now - 300),
            dovecot_login("192.0.2.72", at=now - 120),
            dovecot_login("192.0.2.73", at=now - 20),
        ],
    )
    first = journal.Reader(path=str(journal_dir)).get_next()
    (reader.state / "cursor").write_text(first["__CURSOR"] + "\n")
    reader.start()
    wait_for_key(redis_server, "192.0.2.73")
    assert authorized(redis_server) == {"192.0.2.73"}
    assert "1 expired" in reader.wait_status("Following the journal:")["STATUS"]


def test_restart_resumes_after_the_saved_cursor(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.80")])
    reader.wait_status("Following the journal:")
    reader.stop()
    assert reader.cursor
    redis_server.client().flushall()
    write_journal(journal_dir / "system.journal", [dovecot_login("192.0.2.81")])
    reader.start()
    wait_for_key(redis_server, "192.0.2.81")
    assert authorized(redis_server) == {"192.0.2.81"}  # nothing at or before the cursor again


def test_replay_after_restart_does_not_extend_the_window(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path, audit_sink: AuditSink
) -> None:
    at = time.time() - 200
    run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.82", at=at)])
    expiry = redis_server.client().pexpiretime(key("192.0.2.82"))
    reader.wait_status("Following the journal:")
    reader.stop()
    (reader.state / "cursor").unlink()  # as if killed before the first save: all replayed
    reader.start()
    status = reader.wait_status("Following the journal:")["STATUS"]
    assert "2 already authorized" in status
    assert redis_server.client().pexpiretime(key("192.0.2.82")) == expiry
    assert len(audit_sink.collect(timeout=0.5)) == 2  # the first run's two grants, no more


def test_a_cursor_no_longer_in_the_journal_rereads_one_lifetime(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    (reader.state / "cursor").write_text(
        "s=0123456789abcdef0123456789abcdef;i=42;b=5b0e1c2d3a4f45e6a7b8c9d0e1f2a3b4;"
        "m=1;t=5f0000000000;x=1\n"
    )
    assert run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.83")]) == {
        "192.0.2.83"
    }
    assert "no longer in the journal" in reader.output()


def test_a_damaged_cursor_file_rereads_one_lifetime(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    (reader.state / "cursor").write_text("not a cursor\n")
    assert run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.84")]) == {
        "192.0.2.84"
    }


def test_reader_follows_appends_and_new_files_as_they_are_written(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    run_until_sentinel(reader, redis_server, journal_dir, [])
    same = JournalWriter(journal_dir / "system.journal")
    same.append(dovecot_login("192.0.2.90"))
    wait_for_key(redis_server, "192.0.2.90", timeout=5)
    other = JournalWriter(journal_dir / "system@rotated.journal")
    other.append(dovecot_login("192.0.2.91"))
    wait_for_key(redis_server, "192.0.2.91", timeout=5)
    same.append(dovecot_login("192.0.2.92"))
    wait_for_key(redis_server, "192.0.2.92", timeout=5)
    same.close()
    other.close()


def test_the_cursor_is_saved_once_everything_is_read(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    from systemd import journal

    run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.93")])
    reader.wait_status("Following the journal:")
    last = list(journal.Reader(path=str(journal_dir)))[-1]
    assert reader.cursor == last["__CURSOR"]


def test_a_site_pattern_without_an_address_group_stops_the_reader(
    tmp_path: Path, redis_server: RedisServer, journal_dir: Path
) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        (f'[redis]\nurl = "{redis_server.url}"\n[journal]\npattern = "login (?P<user>\\\\S+)"\n'),
    )
    result = run_cli("journal", "--directory", str(journal_dir), config=config, check=False)
    assert result.returncode == 2
    assert "(?P<address>...)" in result.stderr


def test_a_bad_ignore_network_stops_the_reader(
    tmp_path: Path, redis_server: RedisServer, journal_dir: Path
) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        (f'[redis]\nurl = "{redis_server.url}"\n[authorization]\nignore = ["10.0.0.0/33"]\n'),
    )
    result = run_cli("journal", "--directory", str(journal_dir), config=config, check=False)
    assert result.returncode == 2
    assert "10.0.0.0/33" in result.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86_64 syscall numbers")
def test_an_idle_reader_blocks_on_the_journal_and_its_wake_up_socket_with_no_timeout(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    run_until_sentinel(reader, redis_server, journal_dir, [])
    reader.wait_status("Following the journal:")
    assert reader.process is not None
    syscall = ""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # /proc/PID/syscall: number and arguments, in hex
        syscall = Path(f"/proc/{reader.process.pid}/syscall").read_text().split()
        if syscall[0] == "7":  # poll() on the journal and the wake-up socket
            break
        time.sleep(0.05)
    assert syscall[0] == "7", syscall
    assert int(syscall[2], 16) == 2, "the journal's descriptor and the wake-up socket"
    assert int(syscall[3], 16) == 0xFFFFFFFF, "poll() was given a timeout: the reader polls"


def test_the_watchdog_is_pinged_while_idle(
    tmp_path: Path, redis_server: RedisServer, journal_dir: Path
) -> None:
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{redis_server.url}"\n')
    process = ReaderProcess(
        tmp_path, config, journal_dir, environment={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}
    )
    write_journal(journal_dir / "system.journal", [dovecot_login("192.0.2.94")])
    try:
        process.start()
        assert process.notify is not None
        for _ in range(3):  # three pings after READY: waking every 100 ms while idle
            process.notify.forget()
            process.notify.wait_for(lambda message: message.get("WATCHDOG") == "1", timeout=2)
    finally:
        process.stop()


def test_reader_keeps_following_after_rotation_and_vacuum(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path
) -> None:
    run_until_sentinel(reader, redis_server, journal_dir, [dovecot_login("192.0.2.95")])
    reader.wait_status("Following the journal:")
    (journal_dir / "system.journal").rename(journal_dir / "system@0001-0001.journal")  # rotated
    writer = JournalWriter(journal_dir / "system.journal")
    writer.append(dovecot_login("192.0.2.96"))
    wait_for_key(redis_server, "192.0.2.96", timeout=5)
    (journal_dir / "system@0001-0001.journal").unlink()  # vacuumed
    writer.append(dovecot_login("192.0.2.97"))
    wait_for_key(redis_server, "192.0.2.97", timeout=5)
    writer.close()
    reader.stop()
    reader.start()  # the saved cursor names an entry of the live file
    writer = JournalWriter(journal_dir / "system.journal")
    writer.append(dovecot_login("192.0.2.98"))
    wait_for_key(redis_server, "192.0.2.98", timeout=5)
    writer.close()
    assert "no longer in the journal" not in reader.output()


def test_an_unusable_state_directory_is_reported_and_logins_still_count(
    tmp_path: Path, redis_server: RedisServer, journal_dir: Path
) -> None:
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{redis_server.url}"\n')
    process = ReaderProcess(
        tmp_path, config, journal_dir, environment={"STATE_DIRECTORY": str(tmp_path / "missing")}
    )
    write_journal(journal_dir / "system.journal", [dovecot_login("192.0.2.99")])
    try:
        process.start()
        wait_for_key(redis_server, "192.0.2.99")
        process.wait_status("Following the journal:")
        writer = JournalWriter(journal_dir / "system.journal")
        writer.append(dovecot_login("192.0.2.100"))
        wait_for_key(redis_server, "192.0.2.100")
        writer.close()
    finally:
        process.stop()
    assert process.output().count("cannot save the cursor") == 1


def test_a_config_under_which_no_login_could_count_stops_the_reader(
    tmp_path: Path, redis_server: RedisServer, journal_dir: Path
) -> None:
    for journal in ("servers = []", "servers = []\nformats = []"):  # empty units: the servers'
        config = write_config(
            tmp_path / "bad.toml", (f'[redis]\nurl = "{redis_server.url}"\n[journal]\n{journal}\n')
        )
        result = run_cli("journal", "--directory", str(journal_dir), config=config, check=False)
        assert result.returncode == 2, journal
        assert "no login could ever count" in result.stderr


def test_a_denied_users_login_authorizes_nothing_and_says_so(
    reader: ReaderProcess, redis_server: RedisServer, journal_dir: Path, audit_sink: AuditSink
) -> None:
    """`pbs-activated deny mallory`: her logins, while denied, are one `denied` entry each."""
    run_cli("deny", "mallory", config=reader.config)
    authorized_now = run_until_sentinel(
        reader,
        redis_server,
        journal_dir,
        [dovecot_login("192.0.2.66", user="mallory"), dovecot_login("192.0.2.67", user="alice")],
    )
    assert authorized_now == {"192.0.2.67"}
    entries = [e for e in audit_sink.collect(timeout=2, until=4) if "PBS_EVENT" in e]
    denied = [e for e in entries if e["PBS_EVENT"] == "denied"]
    assert [(e["PBS_USER"], e["PBS_CLIENT_ADDRESS"]) for e in denied] == [("mallory", "192.0.2.66")]
    assert not [e for e in entries if e["PBS_EVENT"] == "login" and e["PBS_USER"] == "mallory"]
