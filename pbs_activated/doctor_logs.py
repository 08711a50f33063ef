"""doctor's log-source checks: the mail server's lines reach us, and our parsers still read them.

The sign of a log format we no longer understand (Dovecot 2.4's `Logged in:`,
a site's own `login_log_format_elements`) must not come from a loosened copy
of the parser, which would miss exactly the change it is meant to catch. It
comes from independent evidence: lines the server writes only about a session
that did log in (Dovecot's mail processes' `pop3(alice)<pid><session>:
Disconnected: Logged out ...`). A user with such lines and no login line any
parser took is the sign. Each parser module declares its server's evidence
(logins_common.MailServer.session_end); until every server has one, Dovecot's
is declared here too.

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

from pbs_activated.config import Config
from pbs_activated.doctor import ERROR, OK, UNKNOWN, WARNING, Finding, Host
from pbs_activated.logins import IMAP, LoginParser

WINDOW = 86400
"""Seconds of journal the log-source checks read: one day, a whole cycle of a site's use."""

DOVECOT_SESSION_END = re.compile(
    r"^(?P<protocol>pop3|imap)\((?P<user>.+)\)<[0-9]+><[^<>]*>: Disconnected: "
)
"""Dovecot 2.3 and 2.4's mail process at the end of a logged-in session (captured in
tests/system/fixtures/*/dovecot-login-lines.txt): `imap(alice)<505><Imq58o9h...>:
Disconnected: Logged out in=12 ...`. The login process (`imap-login:`) never writes it."""

SUPPRESSED = re.compile(r"Suppressed ([0-9]+) messages from (\S+)")


OWN_EVIDENCE = {"dovecot": DOVECOT_SESSION_END}
"""Per-user evidence this module declares, for a server whose own pattern names no user."""


def session_ends(unit: str = "") -> list[re.Pattern[str]]:
    """The evidence of a logged-in session for `unit`: its server's, as the parser modules
    declare it (logins.SERVERS' session_end), else every server's; Dovecot's without them.

    A declared pattern without a `(?P<user>...)` group can only say "sessions ended and
    no login at all was taken"; where this module has a per-user one, it is added.
    """
    from pbs_activated import logins

    servers = getattr(logins, "SERVERS", {})
    mine = [server for server in servers.values() if unit in getattr(server, "units", ())]
    patterns: list[re.Pattern[str]] = []
    for server in mine or list(servers.values()):
        pattern = getattr(server, "session_end", None)
        if isinstance(pattern, re.Pattern):
            patterns.append(pattern)
            if "user" not in pattern.groupindex and server.name in OWN_EVIDENCE:
                patterns.insert(0, OWN_EVIDENCE[server.name])
    return patterns or [DOVECOT_SESSION_END]


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
        evidence = session_ends(unit)
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
        taken: set[str] = set()
        signs: dict[str, str] = {}
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
                taken.add(login.user)
                continue
            for pattern in evidence:
                match = pattern.search(message)
                if match is None:
                    continue
                named = match.groupdict()
                if (named.get("protocol") or "") == IMAP and not journal.imap:
                    continue
                # A pattern that names no user is evidence for the unit as a whole.
                signs.setdefault(named.get("user") or "", message)
        missed = {
            user: line for user, line in signs.items() if (user not in taken if user else not taken)
        }
        took = ", ".join(f"{name} {count}" for name, count in counts.items())
        if missed and not taken:
            example = next(iter(missed.values()))
            yield Finding(
                "logs.format",
                ERROR,
                f"{unit}: {len(missed)} session(s) logged in and out in the last {hours}, and no"
                f" parser took any login line ({took}); e.g. {example!r}",
                "the server's login lines changed (a new version, login_log_format_elements):"
                " restore its default format, or set [journal] pattern",
            )
        elif missed:
            user, example = next(iter(missed.items()))
            yield Finding(
                "logs.format",
                WARNING,
                f"{unit}: {len(missed)} user(s) logged in with no login line taken"
                f" ({took}); e.g. {user}: {example!r}",
                "compare their login lines with the parsers (pbs-activated(8), DOCTOR)",
            )
        else:
            yield Finding("logs.format", OK, f"{unit}: logins taken in the last {hours}: {took}")


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
