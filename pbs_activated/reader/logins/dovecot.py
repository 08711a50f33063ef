"""Dovecot's login lines (2.3 on Debian 12, 2.4 on Debian 13), proven by
tests/system/fixtures/<release>/dovecot-login-lines.txt.

Dovecot logs a login as `<service>-login: ` followed by login_log_format,
`%{message}: %{elements}` by default. The message is `Login` in 2.3 and
`Logged in` in 2.4 (client_destroy_success(client, "Logged in") in
src/login-common/client-common-auth.c); a failed or abandoned login is
`Disconnected ...`/`Aborted login ...` (2.3) or `Login aborted: ...` (2.4).
The elements are login_log_format_elements joined with ", " (empty ones left
out): by default `user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<...>`
in 2.3, the same names spelled `%{user}`, `%{mechanism}`... in 2.4. `%c` /
`%{secured}` is `TLS`, `secured` (login_trusted_networks) or nothing; sites
often add `%k` ("TLSv1.3 with cipher ..."). Written to a log file rather than
syslog/journald the message carries an `Info: ` prefix.
"""

from __future__ import annotations

import binascii
import re

from pbs_activated.config import defaults
from pbs_activated.reader.logins.common import ADDRESS, Login, MailServer, SessionKeys

_LOGIN = re.compile(
    r"(?P<protocol>pop3|imap)-login: (?:Info: )?(?:Login|Logged in): "
    r"user=<(?P<user>.+)>, method=[A-Za-z0-9_-]+, "
    rf"rip=(?P<address>{ADDRESS}), lip={ADDRESS}"
    r"(?:, (?:mpid=[0-9]+|secured|TLS[^,<>=]*|session=<[A-Za-z0-9+/=]*>))*"
)

SESSION_END = re.compile(
    r"^(?P<protocol>pop3|imap)\((?P<user>.+)\)<(?P<process>[0-9]+)><(?P<session>[^<>]*)>: "
    r"Disconnected: Logged out"
)
"""The mail process's last line, `pop3(alice)<497><1NWu...>: Disconnected: Logged out ...`:
only a session that logged in has a mail process (both versions). Its prefix is
mail_log_prefix, `%s(%u)<%{pid}><%{session}>: ` by default: the pid is the login
line's `mpid=`, the session its `session=<...>`."""

LOGIN_SESSION = re.compile(r"\bmpid=(?P<process>[0-9]+)|\bsession=<(?P<session>[A-Za-z0-9+/=]+)>")
"""A login line's `mpid=` and `session=<...>` elements (a site's format may lack both)."""

MICROSECONDS = 1 << 48
"""The session ID's time is the low 48 bits of a microsecond clock: it wraps every 8.9 years."""


def session_started(groups: dict[str, str], ended: float) -> float | None:
    """When a Dovecot session began (Unix s), read from its ID and the time it ended.

    The login process names a session by base64 of the low 48 bits of the time
    it accepted the connection in microseconds (little-endian), then the
    client's port and address (client_get_session_id() in login-common, 2.3 and
    2.4 alike; every session of the fixtures decodes to its login's time).
    """
    try:
        head = binascii.a2b_base64(groups.get("session", "")[:8])
    except binascii.Error:
        return None
    if len(head) != 6:
        return None
    ended_us = int(ended * 1_000_000)
    return (ended_us - (ended_us - int.from_bytes(head, "little")) % MICROSECONDS) / 1_000_000


def parse_dovecot(message: str) -> Login | None:
    """Return the login a Dovecot `pop3-login:`/`imap-login:` line records (2.3's
    `Login:`, 2.4's `Logged in:`), or None for any other line."""
    if "-login: " not in message:
        return None
    match = _LOGIN.fullmatch(message)
    if match is None:
        return None
    return Login(match["user"], match["address"], match["protocol"])


DOVECOT = MailServer(
    name="dovecot",
    units=defaults.SERVER_UNITS["dovecot"],
    parse=parse_dovecot,
    session_end=SESSION_END,
    sessions=SessionKeys(LOGIN_SESSION, session_started, own_process=False),
    versions="Dovecot 2.3 (Debian 12), 2.4 (Debian 13)",
)
