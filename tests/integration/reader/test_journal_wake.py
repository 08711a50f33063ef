"""The reader's end of the wake-up channel (issue #22): a handler's wake-up ends the reader's
wait on the journal at once, and no number of them disturbs it."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from journalfiles import JournalWriter, ReaderProcess, dovecot_login, write_journal
from support import AuditSink, RedisServer, write_config

from pbs_activated import wakeup
from pbs_activated.reader.source import JournalSource
from pbs_activated.store import keys


def test_a_wake_up_ends_the_wait_on_the_journal_at_once(tmp_path: Path) -> None:
    write_journal(tmp_path / "journal" / "system.journal", [dovecot_login("192.0.2.10")])
    source = JournalSource(("dovecot.service",), str(tmp_path / "journal"))
    wake = wakeup.WakeSocket(str(tmp_path / "wake.sock"))
    try:
        while source.next_message() is not None:
            pass
        threading.Timer(0.1, wakeup.wake, (wake.path,)).start()
        started = time.monotonic()
        source.wait(5.0, wake)
        assert 0.09 <= time.monotonic() - started < 1.0
        assert wake.drain() == 0  # the wait drained it
    finally:
        wake.close()
        source.close()


def test_the_reader_listens_for_wake_ups_and_a_flood_of_them_costs_no_login(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = write_config(tmp_path / "pbs.toml", f'[redis]\nurl = "{redis_server.url}"\n')
    writer = JournalWriter(tmp_path / "journal" / "system.journal")
    writer.append(dovecot_login("192.0.2.10"))
    reader = ReaderProcess(tmp_path, config, tmp_path / "journal", audit_sink.path)
    try:
        reader.start()
        assert stat.S_IMODE(os.stat(reader.wake_path).st_mode) == 0o620
        for _ in range(20000):
            wakeup.wake(str(reader.wake_path))
        writer.append(dovecot_login("192.0.2.11"))
        client = redis_server.client()
        deadline = time.monotonic() + 10
        while not client.exists(keys.client_key("192.0.2.11")):
            assert time.monotonic() < deadline, reader.output()
            time.sleep(0.01)
        assert client.exists(keys.client_key("192.0.2.10"))
    finally:
        reader.stop()
        writer.close()
    assert not reader.wake_path.exists()
