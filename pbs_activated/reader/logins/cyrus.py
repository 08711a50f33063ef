"""Cyrus's login lines (cyrus-imapd, cyrus-pop3d: 3.6 on Debian 12, 3.10 on
Debian 13), written from tests/system/fixtures/<release>/cyrus-login-lines.txt.

One unit, cyrus-imapd.service, runs cyrmaster, whose children (imapd and pop3d,
plain and TLS) log under SYSLOG_IDENTIFIER cyrus/imap, cyrus/pop3, cyrus/imaps,
cyrus/pop3s. A login is

    login: [192.0.2.10] alice plaintext User logged in SESSIONID=<cyrus-...>
    login: evil[192.0.2.50] [192.0.2.40] alice plaintext+TLS User logged in SESSIONID=<...>

POP3 and IMAP alike: the line does not say which, so a Cyrus login's protocol
is empty and `[journal] imap = false` cannot leave its IMAP logins out. Before
the address comes the client's reverse-DNS name when it has one, written as
the resolver returned it: a name the client's DNS chooses, and the fixtures'
hostile ones (`evil[192.0.2.50]`, `[192.0.2.50]`, `x]-[192.0.2.50]`) are taken
as names. Matched greedily and anchored at the end, the name takes everything
up to the *last* `[address]` that the daemon's fixed tail (user, mechanism,
`User logged in`) follows, so the address is always the one Cyrus wrote. A
failure is `badlogin: ...`; every line that is not a login starts otherwise.
"""

from __future__ import annotations

import re

from pbs_activated.config import defaults
from pbs_activated.reader.logins.common import (
    ADDRESS,
    Login,
    MailServer,
    SessionKeys,
    start_unknown,
)

_LOGIN = re.compile(
    rf"login: (?:.* )?\[(?P<address>{ADDRESS})\] (?P<user>\S+) "
    r"[A-Za-z0-9_-]+(?:\+TLS)? User logged in(?: SESSIONID=<[^<>\s]*>)?"
)

SESSION_END = re.compile(r"^USAGE (?P<user>\S+) user: ")
"""`USAGE alice user: 0.003546 sys: 0.021245`, written when a logged-in imapd or
pop3d ends (a session without a login writes none; pop3d's `counts:` comes either way).
It names no session: the process that wrote it (the journal's _PID) served one
session at a time, the one of its last login line, and wrote both lines itself."""

LOGIN_SESSION = re.compile(r" SESSIONID=<(?P<session>[^<>\s]*)>$")
"""A login line's SESSIONID, which no line at the session's end repeats on Debian 12."""


def parse_cyrus(message: str) -> Login | None:
    """Return the login a Cyrus `login: [name ][address] user mech User logged in` line records."""
    if not message.startswith("login: "):
        return None
    match = _LOGIN.fullmatch(message)
    if match is None:
        return None
    return Login(match["user"], match["address"], "")


CYRUS = MailServer(
    name="cyrus",
    units=defaults.SERVER_UNITS["cyrus"],
    parse=parse_cyrus,
    session_end=SESSION_END,
    sessions=SessionKeys(LOGIN_SESSION, start_unknown, own_process=True),
    versions="Cyrus IMAP 3.6 (Debian 12), 3.10 (Debian 13)",
)
