"""The premise of the reader's tests: journal files written by systemd-journal-remote
keep the trusted fields and timestamps we give them, and a reader following the
directory sees entries appended later, to the same file or to a new one."""

from __future__ import annotations

import time
from pathlib import Path

from journalfiles import JournalWriter, dovecot_login, forged, read_export, write_journal


def test_journal_remote_keeps_trusted_fields_and_timestamps(tmp_path: Path) -> None:
    at = time.time() - 120
    write_journal(tmp_path / "j" / "a.journal", [dovecot_login("192.0.2.10", at=at), forged("x")])
    trusted, forgery = read_export(tmp_path / "j")
    assert trusted["_SYSTEMD_UNIT"] == "dovecot.service"
    assert (trusted["_UID"], trusted["_COMM"]) == ("0", "dovecot")
    assert trusted["_EXE"] == "/usr/sbin/dovecot"
    assert trusted["_TRANSPORT"] == "syslog"
    assert trusted["__REALTIME_TIMESTAMP"] == str(int(at * 1_000_000))
    assert forgery["_SYSTEMD_UNIT"] == "session-1000.scope"
    assert forgery["SYSLOG_IDENTIFIER"] == "dovecot"


def test_a_following_reader_sees_appends_to_the_same_and_to_new_files(tmp_path: Path) -> None:
    from systemd import journal

    directory = tmp_path / "j"
    write_journal(directory / "a.journal", [dovecot_login("192.0.2.1")])
    reader = journal.Reader(path=str(directory))
    assert len(list(reader)) == 1
    reader.wait(0)  # the first wait reports INVALIDATE at once
    for name in ("a.journal", "b.journal"):
        writer = JournalWriter(directory / name)
        writer.append(dovecot_login("192.0.2.2"))
        deadline = time.monotonic() + 5
        seen: list[object] = []
        while not seen and time.monotonic() < deadline:
            assert reader.wait(1) in (journal.NOP, journal.APPEND, journal.INVALIDATE)
            seen = list(reader)
        writer.close()
        assert len(seen) == 1, name
