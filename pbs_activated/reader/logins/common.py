"""What every mail server's login parser shares: the Login it returns, the MailServer it declares.

One module per server (logins.dovecot, logins.courier, logins.cyrus) describes
that server as a MailServer: the units its lines come from, the parser of its
successful-login lines, and a pattern of the lines it writes only *after* a
successful login (a logout, a disconnect of a logged-in session) with what
names that session (SessionKeys). The reader uses the first two; `doctor` the
rest: a session that ended with no parsed login of its own is the sign of
logins this package no longer understands (a new version's wording, a site's
log format), even for a user whose earlier logins, in the old format, were
taken the same day.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

POP3 = "pop3"
IMAP = "imap"

ADDRESS = r"[0-9A-Fa-f.:]+"
"""What every parser accepts as an address; addresses.normalize checks it afterwards."""


class Login(NamedTuple):
    """A successful login as the log line tells it; the address is not yet normalised."""

    user: str
    address: str
    protocol: str
    """`pop3`, `imap`, or empty when a site pattern does not say."""


def start_unknown(groups: dict[str, str], ended: float) -> None:
    """SessionKeys.started of a server whose session end does not say when it began."""
    return None


class SessionKeys(NamedTuple):
    """How doctor tells which login a session's end belongs to; the reader never uses it."""

    login: re.Pattern[str]
    """Searched in a login line a parser took: its groups `session` (the server's name for
    the session) and `process` (the pid serving it), the keys session_end's groups carry."""
    started: Callable[[dict[str, str], float], float | None]
    """When a session began, from its end line's groups and the time (Unix s) it ended;
    None when the line does not tell."""
    own_process: bool
    """Each session's own process writes its lines (Cyrus's imapd, pop3d): the journal's
    _PID of the login and of the end is then the process key."""


class MailServer(NamedTuple):
    """A POP3/IMAP server as the reader (and doctor) knows it: data, no behaviour of its own."""

    name: str
    """The word `[journal] servers` and `formats` use: `dovecot`, `courier`, `cyrus`."""
    units: tuple[str, ...]
    """The systemd units Debian runs it as: the trusted _SYSTEMD_UNIT of its lines."""
    parse: Callable[[str], Login | None]
    """The successful login a message records, or None."""
    session_end: re.Pattern[str]
    """Matches (with `search`) the lines the server writes only after a successful login;
    its group `user` names the session's user (and `protocol`, where the line says it),
    `session` and `process` the keys of SessionKeys, where the line has them."""
    sessions: SessionKeys
    """Which login line a session's end belongs to."""
    versions: str
    """The versions proven against the real daemon, for messages and the README."""
