"""`pbs-activated journal`: follow the journal, put each login's address into Redis.

The reader blocks on the journal (sd_journal_wait, i.e. inotify) and wakes when
journald stores something; no timer polls for data. The only timeouts are the
watchdog's (half of WatchdogSec=, so systemd knows we are alive while idle) and
the back-off while Redis is unreachable.

Trust: only entries whose *trusted* fields say they come from a configured
mail-server unit count. `_SYSTEMD_UNIT` and `_TRANSPORT` are set by journald from
the sending process's cgroup and socket, where `SYSLOG_IDENTIFIER` and `MESSAGE`
are whatever the sender wrote: `logger -t dovecot "imap-login: Login: ..."` from a
shell lands in the user's session scope and authorizes nothing. Remote journals
(systemd-journal-remote on this host) carry fields their sender chose, so the
system journal is opened LOCAL_ONLY.

Lossless: the cursor advances only past entries whose login Redis acknowledged
(store.authorize returned). Any exception from the store means "not acknowledged":
the entry is kept and retried with back-off, the cursor stays, the state goes to
`systemctl status` through sd_notify. A SIGKILL at any moment loses nothing: on
restart the entries after the saved cursor are read again, and a replayed login
can only set the expiry it set before (it counts from the login's own time).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pbs_activated import addresses, audit, defaults, store
from pbs_activated.config import Config
from pbs_activated.cursor import CursorFile, state_directory
from pbs_activated.logins import InvalidPattern, LoginParser

Result = TypeVar("Result")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        return str(self._reader._get_cursor())

    def realtime_us(self) -> int:
        """When journald received the current entry, in Unix microseconds."""
        return int(self._reader._get_realtime())

    def trusted_fields(self) -> tuple[str, str]:
        """The current entry's `_SYSTEMD_UNIT` and `_TRANSPORT`, set by journald itself."""
        return _text(self._reader, "_SYSTEMD_UNIT"), _text(self._reader, "_TRANSPORT")

    def wait(self, timeout: float | None) -> int:
        """Block until the journal changes or `timeout` seconds pass (None: forever)."""
        return int(self._reader.wait(-1 if timeout is None else int(timeout * 1_000_000)))

    def close(self) -> None:
        """Release the journal files."""
        self._reader.close()


def _text(reader: Any, field: str) -> str:
    try:
        value = reader._get(field)
    except KeyError:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Notifier:
    """sd_notify: READY, STATUS and the watchdog; silent when not run by systemd."""

    def __init__(self) -> None:
        from systemd import daemon

        self._notify = daemon.notify
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


def _state(status: str) -> str:
    """The state a STATUS line names, without its counts ("Following the journal")."""
    return status.partition(":")[0].partition(" (")[0]


class Counts:
    """What the reader did since it started, for STATUS and the tests."""

    __slots__ = ("entries", "logins", "granted", "kept", "expired", "ignored", "invalid")

    def __init__(self) -> None:
        self.entries = 0
        self.logins = 0
        self.granted = 0
        self.kept = 0
        """Logins whose address was already authorized as long or longer (a replay)."""
        self.expired = 0
        self.ignored = 0
        self.invalid = 0

    def summary(self) -> str:
        return (
            f"{self.entries} entries, {self.logins} logins: {self.granted} authorized, "
            f"{self.kept} already authorized, {self.expired} expired, "
            f"{self.ignored} ignored, {self.invalid} invalid"
        )


class LoginReader:
    """The loop: read an entry, authorize its login (retrying until Redis says yes), advance."""

    def __init__(
        self,
        config: Config,
        source: JournalSource,
        cursor_file: CursorFile,
        notifier: Notifier,
        parser: LoginParser,
        ignored: list[_Network],
    ) -> None:
        self.config = config
        self.source = source
        self.cursor_file = cursor_file
        self.notifier = notifier
        self.parser = parser
        self.ignored = ignored
        self.units = frozenset(config.journal.units)
        self.lifetime_ms = config.authorization.lifetime * 1000
        self.counts = Counts()
        self.position = ""
        """Cursor of the last entry fully handled; saved to the cursor file from time to time."""
        self._unsaved = 0
        """Entries handled since the last save; the journal is positioned on the last one."""
        self._client: Any = None
        self._save_failing = False

    def run(self) -> int:
        """Position, say READY, reach Redis, then follow the journal for ever.

        READY comes before Redis answers: `systemctl start` (and so the
        package's postinst, and apt) waits for it, and must not hang while the
        store is down. Waiting for Redis is a state of a running reader, shown
        in STATUS, and no login is lost meanwhile: the cursor stays put.
        """
        warning = open_store_warning(self.config)
        if warning:
            _log(warning)
        started_at = self.start()
        self.notifier.ready(f"Following the journal from {started_at}")
        self._until_acknowledged(lambda client: client.ping(), "reaching Redis")
        while True:
            self.step()

    def start(self) -> str:
        """Position the journal: after the saved cursor, else one lifetime back."""
        saved = self.cursor_file.load()
        if saved and self.source.seek_after(saved):
            self.position = saved
            return "the saved cursor"
        self.source.seek_since((store.now_ms() - self.lifetime_ms) * 1000)
        if saved:
            _log(
                f"the saved cursor is no longer in the journal: reading the last "
                f"{self.config.authorization.lifetime} s again"
            )
            return "one lifetime back (saved cursor gone)"
        return "one lifetime back (first start)"

    def step(self) -> None:
        """Handle the next entry, or save the cursor and wait for the journal to change."""
        self.notifier.watchdog()
        try:
            message = self.source.next_message()
        except OSError as error:  # a journal file vanished under us (vacuum): reopen
            _log(f"reading the journal failed ({error}): reopening it")
            self._unsaved = 0  # the entries since `position` are read again
            self.source.reopen()
            if not (self.position and self.source.seek_after(self.position)):
                self.start()
            return
        if message is None:
            self.save_cursor()
            self.notifier.set_status(f"Following the journal: {self.counts.summary()}")
            self.source.wait(self.notifier.interval)
            return
        self.handle(message)
        self._unsaved += 1
        if self._unsaved >= defaults.CURSOR_SAVE_EVERY:
            self.save_cursor()

    def save_cursor(self) -> None:
        """Persist the position; every login up to it has been acknowledged by Redis.

        A state directory that refuses the write costs only a longer replay after
        a restart (one lifetime instead of a few entries), so it is reported once
        and the reader carries on authorizing.
        """
        if self._unsaved:
            self.position = self.source.cursor()
            self._unsaved = 0
        if not self.position:
            return
        try:
            self.cursor_file.save(self.position)
        except OSError as error:
            if not self._save_failing:
                _log(f"cannot save the cursor in {self.cursor_file.path}: {error.strerror}")
            self._save_failing = True
        else:
            self._save_failing = False

    def handle(self, message: str) -> None:
        """Authorize the current entry's login if it is one we trust; return once Redis agreed."""
        self.counts.entries += 1
        login = self.parser.parse(message)
        if login is None:
            return
        unit, transport = self.source.trusted_fields()
        if unit not in self.units or transport not in defaults.JOURNAL_TRANSPORTS:
            return
        self.counts.logins += 1
        try:
            address = addresses.normalize(login.address)
        except addresses.InvalidAddress:
            self.counts.invalid += 1
            return
        if addresses.is_local(address) or self._is_ignored(address):
            self.counts.ignored += 1
            return
        login_us = self.source.realtime_us()
        expires_ms = login_us // 1000 + self.lifetime_ms

        attempts = 0

        def authorize(client: Any) -> bool | None:
            nonlocal attempts
            attempts += 1
            # Checked on every retry: a login that expires while Redis is down needs no key.
            if store.now_ms() >= expires_ms:
                return None
            return store.authorize(client, address, login.user, expires_ms)

        granted = self._until_acknowledged(authorize, f"authorizing {address}")
        if granted is False and attempts > 1:
            # An attempt that raised may still have been applied (the master died
            # before it replied, or a replica had not confirmed it yet), so "already
            # authorized" may be this very login: audit it as granted. A duplicate
            # audit line after an outage beats a grant that no line records.
            granted = True
        if granted is None:
            self.counts.expired += 1
        elif not granted:
            self.counts.kept += 1
        else:
            self.counts.granted += 1
            audit.send(
                audit.INFO,
                f"authorized {address} for {login.user} until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(expires_ms / 1000))}"
                f" ({login.protocol or 'login'} via {unit})",
                PBS_EVENT="login",
                PBS_USER=login.user,
                PBS_CLIENT_ADDRESS=address,
                PBS_SOURCE_UNIT=unit,
                PBS_LOGIN_TIME=login_us // 1_000_000,
                PBS_EXPIRES=expires_ms // 1000,
            )

    def _is_ignored(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == network.version and ip in network for network in self.ignored)

    def _until_acknowledged(self, operation: Callable[[Any], Result], doing: str) -> Result:
        """Run a Redis operation until it returns; back off and report while it raises.

        Any exception counts as "not acknowledged": redis-py's connection, timeout
        and response errors, and whatever a replication check in the store raises.
        """
        delay = defaults.RETRY_INITIAL
        failing_since = 0.0
        while True:
            try:
                if self._client is None:
                    self._client = store.connect(self.config.redis)
                result = operation(self._client)
            except Exception as error:
                if not failing_since:
                    failing_since = time.monotonic()
                    _log(f"Redis unavailable while {doing}: {_describe(error)}; retrying")
                self.notifier.set_status(
                    f"Waiting for Redis ({_describe(error)}) since "
                    f"{time.monotonic() - failing_since:.0f} s, while {doing}; "
                    f"{self.counts.summary()}"
                )
                self._pause(delay)
                delay = min(delay * 2, defaults.RETRY_MAXIMUM)
                continue
            if failing_since:
                _log(f"Redis is back after {time.monotonic() - failing_since:.1f} s")
                self.notifier.set_status(f"Catching up: {self.counts.summary()}")
            return result

    def _pause(self, seconds: float) -> None:
        """Sleep between retries, still pinging the watchdog: waiting for Redis is not a hang."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.notifier.watchdog()
            time.sleep(min(remaining, self.notifier.interval or remaining))


def open_store_warning(config: Config) -> str:
    """A warning when the configured store takes logins with no secret at all, else ''.

    Such a store (0.1.0's default, Debian's redis-server on 127.0.0.1:6379) lets
    every local user write an authorization, i.e. make Postfix relay. It keeps
    working, since the administrator chose it, but not silently.
    """
    redis = config.redis
    if redis.component_users() or redis.password or redis.tls_cert_file:
        return ""
    return (
        f"warning: the store {redis.url} is used without a password: every local user "
        "who can reach it can authorize a relay. Remove [redis] url to use the "
        "package's own store (pbs-store.service), or give it ACL users: see "
        "pbs-activated(8), SECURITY"
    )


def _describe(error: Exception) -> str:
    """One line naming the error: its type and reason.

    redis-py's pipeline errors quote the whole command before the reason (here
    the authorize script, over many lines): only the reason is kept.
    """
    text = str(error).rpartition(" of pipeline caused error: ")[2]
    text = " ".join(text.split()) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text


def _log(message: str) -> None:
    print(f"{defaults.SYSLOG_IDENTIFIER} journal: {message}", file=sys.stderr, flush=True)


def parse_networks(texts: tuple[str, ...]) -> list[_Network]:
    """Parse `[authorization] ignore`; raise ValueError naming a bad entry."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"[authorization] ignore: not a network: {text!r}") from None
    return networks


def main(config: Config) -> int:
    """Run the reader until killed; 2 on a configuration error, 1 when the journal fails."""
    try:
        parser = LoginParser(config.journal.formats, config.journal.imap, config.journal.pattern)
        ignored = parse_networks(config.authorization.ignore)
    except (InvalidPattern, ValueError) as error:
        print(f"pbs-activated: {error}", file=sys.stderr)
        return 2
    if not config.journal.units:
        print("pbs-activated: [journal] units is empty: no login could ever count", file=sys.stderr)
        return 2
    if not config.journal.formats and not config.journal.pattern:
        print(
            "pbs-activated: [journal] formats is empty and there is no pattern: "
            "no login could ever count",
            file=sys.stderr,
        )
        return 2
    try:
        source = JournalSource(config.journal.units, config.journal.directory)
    except (OSError, ValueError) as error:  # python-systemd says ValueError for a bad path
        print(f"pbs-activated: cannot open the journal: {error}", file=sys.stderr)
        return 1
    cursor_file = CursorFile(state_directory())
    reader = LoginReader(config, source, cursor_file, Notifier(), parser, ignored)
    try:
        return reader.run()
    except KeyboardInterrupt:  # no cursor save: the entry in hand may not be acknowledged
        return 0
