"""The reader's journal cursor, kept in a file that is always whole.

The cursor names the last entry whose login (if any) Redis has acknowledged.
It is written to a temporary file, flushed to disk and renamed over the old one,
so a SIGKILL or a power cut leaves either the old cursor or the new one, never
half of one: at worst the reader replays a few entries, which is harmless,
because replaying a login can only set the expiry it already set.
"""

from __future__ import annotations

import os

from pbs_activated.config import defaults


def state_directory() -> str:
    """Return the reader's state directory: systemd's $STATE_DIRECTORY, else Debian's path."""
    # systemd passes a colon-separated list when a unit names several directories.
    configured = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return configured or defaults.STATE_DIRECTORY


class CursorFile:
    """Load and save one cursor atomically."""

    def __init__(self, directory: str, name: str = defaults.CURSOR_FILE) -> None:
        self.path = os.path.join(directory, name)
        self.saved = ""

    def load(self) -> str:
        """Return the saved cursor, or '' when there is none (first start)."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as file:
                self.saved = file.read().strip()
        except FileNotFoundError:
            self.saved = ""
        return self.saved

    def save(self, cursor: str) -> None:
        """Replace the saved cursor; raises OSError when the state directory is unusable."""
        if cursor == self.saved:
            return
        temporary = f"{self.path}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, cursor.encode("ascii") + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, self.path)
        self.saved = cursor
