"""What the reader tells systemd: sd_notify's READY, STATUS and WATCHDOG, and its log.

STATUS is what `systemctl status pbs-journal` shows: following the journal,
catching up, waiting for Redis, refused by the store, with the counts of what
was done. Log lines go to stderr, which systemd files in the journal
(StandardError=journal); a `<N>` prefix gives a line its priority (sd-daemon(3)).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from pbs_activated.config import defaults

ERROR = 3
"""The priority of a log line that needs an administrator (sd-daemon(3): SD_ERR)."""


def log(message: str, priority: int | None = None) -> None:
    """Write one line of the reader's log; `priority` for one above the unit's default."""
    prefix = "" if priority is None else f"<{priority}>"
    print(f"{prefix}{defaults.SYSLOG_IDENTIFIER} journal: {message}", file=sys.stderr, flush=True)


class Notifier:
    """sd_notify: READY, STATUS and the watchdog; silent when not run by systemd."""

    def __init__(self, send: Callable[[str], object] | None = None) -> None:
        if send is None:
            from systemd import daemon

            send = daemon.notify
        self._notify = send
        self.interval: float | None = None
        """Seconds between watchdog pings (half of WatchdogSec=), or None without a watchdog."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.interval = int(usec) / 2_000_000
        self._next_ping = 0.0
        self.status = ""
        self._status_sent = 0.0

    def ready(self, status: str) -> None:
        """Tell systemd the reader has started (`systemctl start` returns), and what it does."""
        self.status = status
        self._notify(f"READY=1\nSTATUS={status}")
        self._status_sent = time.monotonic()

    def set_status(self, status: str) -> None:
        """Report the state; a mere change of the counts is sent at most once a second.

        A new state (following, waiting for Redis, catching up) is always sent:
        the counts change with every login, and PID 1 turns each STATUS into a
        D-Bus signal, so a stream of logins must not become a stream of signals.
        """
        if status == self.status:
            return
        now = time.monotonic()
        if _state(status) == _state(self.status) and (
            now - self._status_sent < defaults.STATUS_INTERVAL
        ):
            return
        self.status = status
        self._status_sent = now
        self._notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if self.interval is not None and time.monotonic() >= self._next_ping:
            self._notify("WATCHDOG=1")
            self._next_ping = time.monotonic() + self.interval

    def pause(self, seconds: float) -> None:
        """Sleep, still pinging the watchdog: a reader waiting for the store is not hung."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.watchdog()
            time.sleep(min(remaining, self.interval or remaining))


def _state(status: str) -> str:
    """The state a STATUS line names, without its counts ("Following the journal")."""
    return status.partition(":")[0].partition(" (")[0]


class Counts:
    """What the reader did since it started, for STATUS and the tests."""

    __slots__ = ("entries", "logins", "granted", "kept", "denied", "expired", "ignored", "invalid")

    def __init__(self) -> None:
        self.entries = 0
        self.logins = 0
        self.granted = 0
        self.kept = 0
        """Logins whose address was already authorized as long or longer (a replay)."""
        self.denied = 0
        """Logins of a user `pbs-activated deny` has barred: nothing authorized."""
        self.expired = 0
        self.ignored = 0
        self.invalid = 0

    def summary(self) -> str:
        """The counts in one line, as STATUS shows them."""
        return (
            f"{self.entries} entries, {self.logins} logins: {self.granted} authorized, "
            f"{self.kept} already authorized, {self.denied} denied, {self.expired} expired, "
            f"{self.ignored} ignored, {self.invalid} invalid"
        )
