"""Log lines that mean "this client logged in": the servers known, and the parser the reader uses.

Each server's own lines are described in a module of its own (logins.dovecot,
logins.courier, logins.cyrus), written from lines captured from the real daemon
on each Debian release (tests/system/fixtures/). This module names them
(SERVERS), and builds the reader's LoginParser from the configured servers,
formats and site pattern.

Every parser is anchored at both ends of the message. The user name is the one
part of a login line a client chooses (and Cyrus's reverse-DNS name, which
the client's DNS chooses), so a user called `x>, method=PLAIN, rip=192.0.2.50,
lip=...` would smuggle an address into a parser that searched for `rip=`
anywhere. Anchored at the end, with the client's part matched greedily, the
address is always the one the server wrote, because nothing after it is the
client's to choose.

Only successful logins count: every failure, abort and disconnect line returns None.

The reader (not the policy handler) imports this, so `re` and `typing` are fine.
"""

from __future__ import annotations

import re

from pbs_activated.reader.logins.common import IMAP, POP3, Login, MailServer
from pbs_activated.reader.logins.courier import COURIER, parse_courier
from pbs_activated.reader.logins.cyrus import CYRUS, parse_cyrus
from pbs_activated.reader.logins.dovecot import DOVECOT, parse_dovecot

__all__ = [
    "IMAP",
    "POP3",
    "SERVERS",
    "InvalidPattern",
    "Login",
    "LoginParser",
    "MailServer",
    "compile_site_pattern",
    "parse_courier",
    "parse_cyrus",
    "parse_dovecot",
    "parse_site",
    "servers_units",
]

SERVERS: dict[str, MailServer] = {server.name: server for server in (DOVECOT, COURIER, CYRUS)}
"""Every server `[journal] servers` (and `formats`) may name, with its units and parser."""


class InvalidPattern(ValueError):
    """The configured site pattern is not a usable regular expression."""


def servers_units(names: tuple[str, ...]) -> tuple[str, ...]:
    """The units of the named servers, in order, each once: what `servers` implies for `units`."""
    return tuple(dict.fromkeys(unit for name in names for unit in SERVERS[name].units))


def compile_site_pattern(text: str) -> re.Pattern[str]:
    """Compile the configured site pattern; raise InvalidPattern with the reason.

    Checked when the reader starts, so a typo stops the service with a message
    instead of silently authorizing nobody (or, worse, the wrong part of a line).
    """
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise InvalidPattern(f"[journal] pattern is not a regular expression: {error}") from None
    missing = {"user", "address"} - set(pattern.groupindex)
    if missing:
        names = ", ".join(f"(?P<{name}>...)" for name in sorted(missing))
        raise InvalidPattern(f"[journal] pattern needs the named group(s) {names}")
    return pattern


def parse_site(pattern: re.Pattern[str], message: str) -> Login | None:
    """Return the login a site pattern finds; it must match the whole message."""
    match = pattern.fullmatch(message)
    if match is None or not match["user"] or not match["address"]:
        return None
    protocol = (match.groupdict().get("protocol") or "").lower()
    return Login(match["user"], match["address"], protocol)


class LoginParser:
    """The configured formats (server names), tried in turn on a message."""

    def __init__(self, formats: tuple[str, ...], imap: bool = True, pattern: str = "") -> None:
        """Raise InvalidPattern for a bad site pattern or KeyError for an unknown format."""
        self._parsers = [SERVERS[name].parse for name in formats]
        self._pattern = compile_site_pattern(pattern) if pattern else None
        self.imap = imap

    def parse(self, message: str) -> Login | None:
        """Return the successful login in `message`, or None (IMAP ones only if enabled)."""
        login = None
        for parser in self._parsers:
            login = parser(message)
            if login is not None:
                break
        if login is None and self._pattern is not None:
            login = parse_site(self._pattern, message)
        if login is None or (login.protocol == IMAP and not self.imap):
            return None
        return login
