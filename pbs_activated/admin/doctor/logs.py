"""doctor's log-source checks: the mail server's lines reach us, and our parsers still read them.

The sign of a log format we no longer understand (Dovecot 2.4's `Logged in:`,
a site's own `login_log_format_elements`) must not come from a loosened copy
of the parser, which would miss exactly the change it is meant to catch. It
comes from independent evidence: lines the server writes only about a session
that did log in (Dovecot's mail processes' `pop3(alice)<pid><session>:
Disconnected: Logged out ...`), each declared by its parser module
(logins.common.MailServer.session_end). A session with such a line and no
login line any parser took for *that session* (doctor.sessions) is the sign,
also for a user whose logins in the old format were taken earlier that day.

journald drops messages beyond its per-unit rate limit, which counts every
message of the unit (not only logins) and which journald scales up with free
disk space; its own "Suppressed N messages from UNIT" entries say when it did.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

from pbs_activated.admin.doctor.findings import ERROR, OK, UNKNOWN, WARNING, Finding, Host
from pbs_activated.admin.doctor.sessions import Ended, Sessions
from pbs_activated.config import Config
from pbs_activated.reader.logins.parser import SERVERS, LoginParser, MailServer

WINDOW = 86400
"""Seconds of journal the log-source checks read: one day, a whole cycle of a site's use."""

SUPPRESSED = re.compile(r"Suppressed ([0-9]+) messages from (\S+)")


def servers_of(unit: str) -> list[MailServer]:
    """The servers whose lines `unit` carries: those that declare it, else every one."""
    mine = [server for server in SERVERS.values() if unit in server.units]
    return mine or list(SERVERS.values())


def messages(host: Host, since: float, *matches: str) -> list[dict[str, str]] | None:
    """The journal's entries since `since` (Unix s) matching `matches`; None if unreadable."""
    status, output = host.run(
        ["journalctl", "--quiet", "--no-pager", "-o", "json", f"--since=@{int(since)}", *matches]
    )
    if status != 0:
        return None
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, str):
            entries.append(entry)
    return entries


def check(config: Config, host: Host, window: float = WINDOW) -> Iterator[Finding]:
    """Per configured unit: it exists, it logs, what each parser took, signs of a new format."""
    since = time.time() - window
    hours = f"{window / 3600:g} h"
    journal = config.journal
    # `[journal] servers` gives the units and formats when they are not set by hand.
    units = _units(config)
    formats = journal.login_formats() if hasattr(journal, "login_formats") else journal.formats
    for unit in units:
        status, output = host.run(["systemctl", "show", "-p", "LoadState", "--value", unit])
        if status == 0 and output.strip() == "not-found":
            yield Finding(
                "logs.unit",
                ERROR,
                f"{unit} ([journal] units) does not exist: no login is ever taken",
                "name the mail server's unit in [journal] units",
            )
            continue
        entries = messages(host, since, f"_SYSTEMD_UNIT={unit}")
        if entries is None:
            yield Finding(
                "logs.source",
                UNKNOWN,
                f"cannot read the journal of {unit}",
                "run doctor as root, or in group systemd-journal or adm",
            )
            continue
        if not entries:
            yield Finding(
                "logs.source",
                WARNING,
                f"{unit} logged nothing to the journal in the last {hours}",
                f"check that {unit} runs and logs to syslog or the journal",
            )
            continue
        counts = {name: 0 for name in formats}
        parsers = {name: LoginParser((name,), True) for name in formats}
        site = LoginParser((), True, journal.pattern) if journal.pattern else None
        sessions = Sessions(servers_of(unit), since, journal.imap)
        # Every login first, then the session ends: a short session's end can reach the
        # journal before its login line (Dovecot's login and mail processes log through
        # its log process, in no order between them), and must still find it.
        ends = []
        for entry in entries:
            message = entry["MESSAGE"]
            login = None
            for name, parser in parsers.items():
                login = parser.parse(message)
                if login is not None:
                    counts[name] += 1
                    break
            if login is None and site is not None:
                login = site.parse(message)
                if login is not None:
                    counts["pattern"] = counts.get("pattern", 0) + 1
            if login is not None:
                sessions.taken(entry, login)
            else:
                ends.append(entry)
        for entry in ends:
            sessions.other(entry)
        yield format_finding(unit, sessions, counts, hours)


def format_finding(unit: str, sessions: Sessions, counts: dict[str, int], hours: str) -> Finding:
    """logs.format: an error when sessions ended after the last login taken (every login
    since may be unread), a warning when the ones missed are older, else what was taken."""
    took = ", ".join(f"{name} {count}" for name, count in counts.items())
    missed = sessions.missed
    if not missed:
        return Finding("logs.format", OK, f"{unit}: logins taken in the last {hours}: {took}")
    recent = [ended for ended in missed if ended.at > sessions.last_taken]
    if recent:
        last = (
            "no parser took any login line"
            if not sessions.last_taken
            else "the last login line taken was at " + _local(sessions.last_taken)
        )
        return Finding(
            "logs.format",
            ERROR,
            f"{unit}: {len(recent)} session(s) of {_users(recent)} logged in and out since"
            f" {_local(recent[0].at)} with no login line taken for them, and {last} ({took});"
            f" e.g. {recent[0].user}: {recent[0].message!r}",
            "the server's login lines changed (a new version, login_log_format_elements):"
            " restore its default format, or set [journal] pattern",
        )
    return Finding(
        "logs.format",
        WARNING,
        f"{unit}: {len(missed)} session(s) of {_users(missed)} logged in with no login line"
        f" taken for them ({took}); e.g. {missed[0].user}: {missed[0].message!r}",
        "compare their login lines with the parsers (pbs-activated(8), DOCTOR)",
    )


def _users(ended: list[Ended]) -> str:
    return f"{len({session.user for session in ended})} user(s)"


def _local(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def check_journald(config: Config, host: Host, window: float = WINDOW) -> Iterator[Finding]:
    """journald's suppressions of the mail server's units, the limit in force, persistence."""
    since = time.time() - window
    entries = messages(host, since, "_SYSTEMD_UNIT=systemd-journald.service")
    if entries is None:
        yield Finding(
            "journald.rate-limit",
            UNKNOWN,
            "cannot read journald's own messages",
            "run doctor as root, or in group systemd-journal or adm",
        )
    else:
        dropped: dict[str, int] = {}
        for entry in entries:
            match = SUPPRESSED.search(entry["MESSAGE"])
            if match and os.path.basename(match[2]) in _units(config):
                unit = os.path.basename(match[2])
                dropped[unit] = dropped.get(unit, 0) + int(match[1])
        limit = _rate_limit(host)
        if dropped:
            yield Finding(
                "journald.rate-limit",
                ERROR,
                "journald dropped "
                + ", ".join(f"{count} messages of {unit}" for unit, count in dropped.items())
                + f" (logins among them) in the last {window / 3600:g} h; limit {limit}",
                "install /usr/share/doc/pbs-activated/examples/dovecot-log-rate-limit.conf"
                " as a drop-in of the unit, then systemctl daemon-reload",
            )
        else:
            yield Finding(
                "journald.rate-limit", OK, f"no message of the mail server dropped; limit {limit}"
            )
    storage = _journald_setting(host, "Storage") or "auto"
    persistent = storage == "persistent" or (
        storage == "auto" and os.path.isdir("/var/log/journal")
    )
    if persistent:
        yield Finding("journald.storage", OK, f"the journal is persistent (Storage={storage})")
    else:
        yield Finding(
            "journald.storage",
            WARNING,
            f"the journal is not persistent (Storage={storage}): a reboot loses the audit"
            " trail and the logins the reader had not yet stored",
            "mkdir -p /var/log/journal; systemctl restart systemd-journald",
        )


def _units(config: Config) -> tuple[str, ...]:
    journal = config.journal
    return journal.login_units() if hasattr(journal, "login_units") else journal.units


def _journald_setting(host: Host, name: str) -> str:
    status, output = host.run(["systemd-analyze", "cat-config", "systemd/journald.conf"])
    value = ""
    for line in output.splitlines() if status == 0 else ():
        key, equals, setting = line.strip().partition("=")
        if equals and key == name:
            value = setting.strip()
    return value


def _rate_limit(host: Host) -> str:
    """journald's RateLimitBurst per RateLimitIntervalSec, as configured (defaults 10000/30s)."""
    burst = _journald_setting(host, "RateLimitBurst") or "10000"
    interval = _journald_setting(host, "RateLimitIntervalSec") or "30s"
    return f"{burst} messages per {interval} per unit, scaled up with free disk space"
