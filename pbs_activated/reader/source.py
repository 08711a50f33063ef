"""The journal the reader follows: the mail-server units' entries, read one at a time.

Trust: only entries whose *trusted* fields say they come from a configured
mail-server unit count, and journald sets those (`_SYSTEMD_UNIT`, `_TRANSPORT`)
from the sending process's cgroup and socket. Remote journals
(systemd-journal-remote on this host) carry fields their sender chose, so the
system journal is opened LOCAL_ONLY.
"""

from __future__ import annotations

import select
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbs_activated.wakeup import WakeSocket


class JournalSource:
    """The journal filtered to the mail-server units, read forward one entry at a time.

    Uses python-systemd's low-level `_Reader` and fetches only the fields it
    needs, when it needs them: MESSAGE for every entry, the trusted fields and the
    time for logins, the cursor when it is saved. The high-level `Reader.get_next()`
    decodes every field of every entry, which costs most of a catch-up's time.
    """

    def __init__(self, units: tuple[str, ...], directory: str = "") -> None:
        self.units = units
        self.directory = directory
        self._reader = self._open()

    def _open(self) -> Any:
        from systemd import journal

        if self.directory:
            reader = journal._Reader(0, self.directory)
        else:
            reader = journal._Reader(journal.LOCAL_ONLY | journal.SYSTEM_ONLY)
        for unit in self.units:  # several matches on one field: any of them
            reader.add_match(f"_SYSTEMD_UNIT={unit}")
        return reader

    def reopen(self) -> None:
        """Open the journal afresh (after an error reading a rotated or vacuumed file)."""
        self._reader.close()
        self._reader = self._open()

    def seek_after(self, cursor: str) -> bool:
        """Position just after the entry `cursor` names; False if it no longer exists.

        sd_journal_seek_cursor() followed by next() lands *on* the cursor's entry,
        which was already handled: it is consumed here, after checking that it
        really is that entry and not the nearest survivor of a vacuum.
        """
        try:
            self._reader.seek_cursor(cursor)
        except (ValueError, OSError):  # not a cursor at all: a damaged state file
            return False
        return bool(self._reader._next()) and bool(self._reader.test_cursor(cursor))

    def seek_since(self, realtime_us: int) -> None:
        """Position before the first entry at or after a wall-clock time (Unix µs)."""
        self._reader.seek_realtime(realtime_us)

    def next_message(self) -> str | None:
        """Move to the next entry and return its MESSAGE; None when everything has been read.

        The reader stays on that entry (also after None: on the last one read),
        which is what `cursor()`, `realtime_us()` and `trusted_fields()` describe.
        """
        if not self._reader._next():
            return None
        return _text(self._reader, "MESSAGE")

    def cursor(self) -> str:
        """The current entry's cursor."""
        return str(self._reader._get_cursor())

    def realtime_us(self) -> int:
        """When journald received the current entry, in Unix microseconds."""
        return int(self._reader._get_realtime())

    def trusted_fields(self) -> tuple[str, str]:
        """The current entry's `_SYSTEMD_UNIT` and `_TRANSPORT`, set by journald itself."""
        return _text(self._reader, "_SYSTEMD_UNIT"), _text(self._reader, "_TRANSPORT")

    def wait(self, timeout: float | None, wake: WakeSocket | None = None) -> int:
        """Block until the journal changes, `wake` is woken, or `timeout` seconds pass
        (None: forever).

        With `wake`, this is sd_journal_wait() written out (poll the journal's
        descriptor, then sd_journal_process()) with the wake-up socket polled
        beside it: a handler's wake-up (wakeup.py) ends the wait at once, and
        the entries journald has written are read now rather than at its notice.
        """
        if wake is None:
            return int(self._reader.wait(-1 if timeout is None else int(timeout * 1_000_000)))
        poller = select.poll()
        poller.register(self._reader.fileno(), self._reader.get_events())
        poller.register(wake.fileno(), select.POLLIN)
        milliseconds = -1 if timeout is None else int(timeout * 1000)
        journal_ms = int(self._reader.get_timeout_ms())  # -1 on local files: none needed
        if journal_ms >= 0:
            milliseconds = journal_ms if milliseconds < 0 else min(milliseconds, journal_ms)
        poller.poll(milliseconds)
        wake.drain()
        return int(self._reader.process())

    def close(self) -> None:
        """Release the journal files."""
        self._reader.close()


def _text(reader: Any, field: str) -> str:
    try:
        value = reader._get(field)
    except KeyError:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
