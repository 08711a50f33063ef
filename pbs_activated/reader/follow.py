"""`pbs-activated journal`: follow the journal, put each login's address into Redis.

The reader blocks on the journal (sd_journal_wait, i.e. inotify) and wakes when
journald stores something, or when a handler waiting for a login wakes it
(wakeup.py); no timer polls for data. The only timeouts are the
watchdog's (half of WatchdogSec=, so systemd knows we are alive while idle) and
the back-off while the store does not acknowledge.

Trust: only entries whose *trusted* fields say they come from a configured
mail-server unit count (reader/source.py). `_SYSTEMD_UNIT` and `_TRANSPORT` are
set by journald from the sending process's cgroup and socket, where
`SYSLOG_IDENTIFIER` and `MESSAGE` are whatever the sender wrote: `logger -t
dovecot "imap-login: Login: ..."` from a shell lands in the user's session scope
and authorizes nothing.

Lossless: the cursor advances only past entries whose login the store
acknowledged (Writer.authorize returned). Until it does, the entry is kept and
retried (acknowledge.py), the cursor stays, and the state goes to `systemctl
status` through sd_notify (notify.py). A SIGKILL at any moment loses nothing: on
restart the entries after the saved cursor are read again, and a replayed login
can only set the expiry it set before (it counts from the login's own time).
"""

from __future__ import annotations

import ipaddress
import sys
import time

from pbs_activated import addresses, audit, wakeup
from pbs_activated.config import Config, ConfigError, defaults
from pbs_activated.reader.acknowledge import Acknowledger
from pbs_activated.reader.cursor import CursorFile, state_directory
from pbs_activated.reader.logins.parser import InvalidPattern, LoginParser
from pbs_activated.reader.notify import Counts, Notifier, log
from pbs_activated.reader.source import JournalSource
from pbs_activated.store import keys
from pbs_activated.store.writer import DENIED, GRANTED, KEPT, Writer
from pbs_activated.wakeup import WakeSocket

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        wake: WakeSocket | None = None,
    ) -> None:
        self.config = config
        self.wake = wake
        """Where handlers waiting for a login wake us (wakeup.py); None without one."""
        self.source = source
        self.cursor_file = cursor_file
        self.notifier = notifier
        self.parser = parser
        self.ignored = ignored
        self.units = frozenset(config.journal.login_units())
        self.lifetime_ms = config.authorization.lifetime * 1000
        self.counts = Counts()
        self.position = ""
        """Cursor of the last entry fully handled; saved to the cursor file from time to time."""
        self._unsaved = 0
        """Entries handled since the last save; the journal is positioned on the last one."""
        self.store = Acknowledger(config.redis, notifier, self.counts)
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
            log(warning)
        started_at = self.start()
        self.notifier.ready(f"Following the journal from {started_at}")
        self.store.until_acknowledged(lambda writer: writer.ping(), "reaching Redis")
        while True:
            self.step()

    def start(self) -> str:
        """Position the journal: after the saved cursor, else one lifetime back."""
        saved = self.cursor_file.load()
        if saved and self.source.seek_after(saved):
            self.position = saved
            return "the saved cursor"
        self.source.seek_since((keys.now_ms() - self.lifetime_ms) * 1000)
        if saved:
            log(
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
            log(f"reading the journal failed ({error}): reopening it")
            self._unsaved = 0  # the entries since `position` are read again
            self.source.reopen()
            if not (self.position and self.source.seek_after(self.position)):
                self.start()
            return
        if message is None:
            self.save_cursor()
            self.notifier.set_status(f"Following the journal: {self.counts.summary()}")
            self.source.wait(self.notifier.interval, self.wake)
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
                log(f"cannot save the cursor in {self.cursor_file.path}: {error.strerror}")
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

        def authorize(writer: Writer) -> str | None:
            nonlocal attempts
            attempts += 1
            # Checked on every retry: a login that expires while Redis is down needs no key.
            if keys.now_ms() >= expires_ms:
                return None
            return writer.authorize_login(address, login.user, expires_ms)

        outcome = self.store.until_acknowledged(authorize, f"authorizing {address}")
        if outcome == KEPT and attempts > 1:
            # An attempt that raised may still have been applied (the master died
            # before it replied, or a replica had not confirmed it yet), so "already
            # authorized" may be this very login: audit it as granted. A duplicate
            # audit line after an outage beats a grant that no line records.
            outcome = GRANTED
        if outcome is None:
            self.counts.expired += 1
            return
        if outcome == KEPT:
            self.counts.kept += 1
            return
        via = f"({login.protocol or 'login'} via {unit})"
        fields = {
            "PBS_USER": login.user,
            "PBS_CLIENT_ADDRESS": address,
            "PBS_SOURCE_UNIT": unit,
            "PBS_LOGIN_TIME": login_us // 1_000_000,
        }
        if outcome == DENIED:
            self.counts.denied += 1
            denied = f"login of {login.user} from {address} authorizes nothing: the user is denied"
            audit.send(audit.NOTICE, f"{denied} {via}", PBS_EVENT="denied", **fields)
            return
        self.counts.granted += 1
        until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires_ms / 1000))
        audit.send(
            audit.INFO,
            f"authorized {address} for {login.user} until {until} {via}",
            PBS_EVENT="login",
            PBS_EXPIRES=expires_ms // 1000,
            **fields,
        )

    def _is_ignored(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == network.version and ip in network for network in self.ignored)


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


def main(config: Config) -> int:
    """Run the reader until killed; 2 on a configuration error, 1 when the journal fails."""
    try:
        journal = config.journal
        parser = LoginParser(journal.login_formats(), journal.imap, journal.pattern)
        ignored = config.authorization.networks()
    except (InvalidPattern, ConfigError) as error:
        print(f"pbs-activated: {error}", file=sys.stderr)
        return 2
    if not config.journal.login_units():
        print(
            "pbs-activated: [journal] servers and units are empty: no login could ever count",
            file=sys.stderr,
        )
        return 2
    if not config.journal.login_formats() and not config.journal.pattern:
        print(
            "pbs-activated: [journal] servers and formats are empty and there is no pattern: "
            "no login could ever count",
            file=sys.stderr,
        )
        return 2
    try:
        source = JournalSource(config.journal.login_units(), config.journal.directory)
    except (OSError, ValueError) as error:  # python-systemd says ValueError for a bad path
        print(f"pbs-activated: cannot open the journal: {error}", file=sys.stderr)
        return 1
    cursor_file = CursorFile(state_directory())
    wake = wake_socket()
    reader = LoginReader(config, source, cursor_file, Notifier(), parser, ignored, wake)
    try:
        return reader.run()
    except KeyboardInterrupt:  # no cursor save: the entry in hand may not be acknowledged
        return 0
    finally:
        if wake is not None:
            wake.close()


def wake_socket() -> WakeSocket | None:
    """The socket handlers wake us through, or None (said once) where it cannot be made.

    Without it everything works as before, only later: a relay sent within
    half a second of its login waits for journald's notice (up to
    `[policy] login_wait`) instead of a few milliseconds.
    """
    path = wakeup.socket_path()
    try:
        return WakeSocket(path)
    except OSError as error:
        log(
            f"no wake-up socket at {path} ({error.strerror}): a relay right after its "
            "login waits for journald's notice"
        )
        return None
