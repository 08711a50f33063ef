"""The reader's store operations, each retried until the store acknowledges it.

Lossless: the cursor advances only past logins the store acknowledged, so an
operation that fails is sent again, with back-off, for as long as it takes; the
reader says meanwhile what it waits for (STATUS, and one log line per change).

What it waits for is decided by the store's typed errors (store/__init__.py), never by a
broad `except`:

- `StoreUnavailable` (down, unreachable, slow) and its `ServerNotReady`
  (loading its data, read-only, a master without replicas): "Waiting for
  Redis", retried quickly at first, then every RETRY_MAXIMUM seconds.
- `StoreRefused` (a wrong password, an ACL that forbids the script, a script
  error): waiting does not mend it, an administrator must. It is logged at
  error priority as a refusal, with the store's reason, shown as "Refused by the
  store", and retried every RETRY_MAXIMUM seconds, so that the reader goes on by
  itself, losing no login, once the store or its ACL is mended.

Anything else is a bug: it propagates and the reader exits; systemd restarts it
(Restart=always) and the saved cursor replays whatever was not acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pbs_activated.config import RedisSettings, defaults
from pbs_activated.reader.notify import ERROR, Counts, Notifier, log
from pbs_activated.store import StoreError, StoreRefused
from pbs_activated.store.writer import Writer

Result = TypeVar("Result")


class Acknowledger:
    """A writer kept across operations, and the loop that retries each until it returns."""

    def __init__(
        self,
        settings: RedisSettings,
        notifier: Notifier,
        counts: Counts,
        connect: Callable[[RedisSettings], Writer] = Writer,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.counts = counts
        self.connect = connect
        self.writer: Writer | None = None
        self.initial_delay = defaults.RETRY_INITIAL
        self.maximum_delay = defaults.RETRY_MAXIMUM

    def until_acknowledged(self, operation: Callable[[Writer], Result], doing: str) -> Result:
        """Run a store operation until it returns; back off and report while it raises."""
        delay = self.initial_delay
        failing_since = 0.0
        refused: bool | None = None
        """What this failure episode was last reported as; None while nothing failed."""
        while True:
            try:
                if self.writer is None:
                    self.writer = self.connect(self.settings)
                result = operation(self.writer)
            except StoreError as error:
                now = time.monotonic()
                failing_since = failing_since or now
                reason = describe(error)
                is_refused = isinstance(error, StoreRefused)
                if is_refused != refused:
                    self._report(refused, is_refused, reason, doing)
                    refused = is_refused
                since = f"since {now - failing_since:.0f} s, while {doing}"
                if is_refused:
                    delay = self.maximum_delay
                    status = f"Refused by the store ({reason}) {since}"
                else:
                    status = f"Waiting for Redis ({reason}) {since}"
                self.notifier.set_status(f"{status}; {self.counts.summary()}")
                self.notifier.pause(delay)
                delay = min(delay * 2, self.maximum_delay)
                continue
            if failing_since:
                took = time.monotonic() - failing_since
                if refused:
                    log(f"the store accepts the reader again after {took:.1f} s")
                else:
                    log(f"Redis is back after {took:.1f} s")
                self.notifier.set_status(f"Catching up: {self.counts.summary()}")
            return result

    def _report(self, was_refused: bool | None, refused: bool, reason: str, doing: str) -> None:
        """Log the start of a failure episode, or its turn from a refusal to an outage or back."""
        if refused:
            log(
                f"the store refuses the reader ({reason}) while {doing}: check the reader's "
                f"ACL user and secret and the store's ACL (pbs-activated(8), SECURITY); "
                f"retrying every {self.maximum_delay:g} s",
                ERROR,
            )
        elif was_refused:
            log(f"the store no longer refuses the reader but is unavailable ({reason}); retrying")
        else:
            log(f"Redis unavailable while {doing}: {reason}; retrying")


def describe(error: StoreError) -> str:
    """The error's reason in one line (writer.py already names it: `Redis: NOPERM ...`)."""
    return " ".join(str(error).split()) or type(error).__name__
