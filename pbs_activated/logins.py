"""Log lines that mean "this client logged in", as pure functions: one per format.

Every parser is anchored at both ends of the message. The user name is the one
part of a login line a client chooses, and it is written *before* the address,
so a user called `x>, method=PLAIN, rip=192.0.2.50, lip=...` would smuggle an
address into a parser that searched for `rip=` anywhere. Anchored at the end,
with the user matched greedily, the address is always the one the server wrote
after the user name, because nothing after it is the client's to choose.

Only successful logins count: `Disconnected (auth failed ...)`, `Aborted login`
(Dovecot 2.3), `Login aborted: ...` (2.4), `LOGIN FAILED` (Courier) and every
other line return None.

The reader (not the policy handler) imports this, so `re` and `typing` are fine.
"""

from __future__ import annotations

import re
from typing import NamedTuple

POP3 = "pop3"
IMAP = "imap"


class Login(NamedTuple):
    """A successful login as the log line tells it; the address is not yet normalised."""

    user: str
    address: str
    protocol: str
    """`pop3`, `imap`, or empty when a site pattern does not say."""


class InvalidPattern(ValueError):
    """The configured site pattern is not a usable regular expression."""


_ADDRESS = r"[0-9A-Fa-f.:]+"

# Dovecot logs a login as `<service>-login: ` followed by login_log_format,
# `%{message}: %{elements}` by default. The message is `Login` in 2.3 and
# `Logged in` in 2.4 (client_destroy_success(client, "Logged in") in
# src/login-common/client-common-auth.c); a failed or abandoned login is
# `Disconnected ...`/`Aborted login ...` (2.3) or `Login aborted: ...` (2.4).
# The elements are login_log_format_elements joined with ", " (empty ones left
# out): by default `user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<...>`
# in 2.3, the same names spelled `%{user}`, `%{mechanism}`... in 2.4. `%c` /
# `%{secured}` is `TLS`, `secured` (login_trusted_networks) or nothing; sites
# often add `%k` ("TLSv1.3 with cipher ..."). Written to a log file rather than
# syslog/journald the message carries an `Info: ` prefix.
_DOVECOT = re.compile(
    r"(?P<protocol>pop3|imap)-login: (?:Info: )?(?:Login|Logged in): "
    r"user=<(?P<user>.+)>, method=[A-Za-z0-9_-]+, "
    rf"rip=(?P<address>{_ADDRESS}), lip={_ADDRESS}"
    r"(?:, (?:mpid=[0-9]+|secured|TLS[^,<>=]*|session=<[A-Za-z0-9+/=]*>))*"
)

# Courier logs `LOGIN, user=alice, ip=[::ffff:192.0.2.7], port=[40211]` from
# pop3d and adds `, protocol=IMAP` from imapd; failures say `LOGIN FAILED`.
_COURIER = re.compile(
    r"LOGIN, user=(?P<user>.+), ip=\[(?P<address>[0-9A-Fa-f.:]+)\]"
    r"(?:, port=\[[0-9]+\])?(?:, protocol=(?P<protocol>[A-Z0-9]+))?"
)


def parse_dovecot(message: str) -> Login | None:
    """Return the login a Dovecot `pop3-login:`/`imap-login:` line records (2.3's
    `Login:`, 2.4's `Logged in:`), or None for any other line."""
    if "-login: " not in message:
        return None
    match = _DOVECOT.fullmatch(message)
    if match is None:
        return None
    return Login(match["user"], match["address"], match["protocol"])


def parse_courier(message: str) -> Login | None:
    """Return the login a Courier `LOGIN, user=..., ip=[...]` line records."""
    if not message.startswith("LOGIN, "):
        return None
    match = _COURIER.fullmatch(message)
    if match is None:
        return None
    protocol = IMAP if match["protocol"] == "IMAP" else POP3
    return Login(match["user"], match["address"], protocol)


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
    """The configured formats, tried in turn on a message."""

    def __init__(self, formats: tuple[str, ...], imap: bool = True, pattern: str = "") -> None:
        """Raise InvalidPattern for a bad site pattern or KeyError for an unknown format."""
        parsers = {"dovecot": parse_dovecot, "courier": parse_courier}
        self._parsers = [parsers[name] for name in formats]
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
