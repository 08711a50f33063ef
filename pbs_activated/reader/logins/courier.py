"""Courier's login lines (courier-pop, courier-imap: 5.0 on Debian 12, 5.2 on
Debian 13), written from tests/system/fixtures/<release>/courier-login-lines.txt.

Every daemon logs through its own courierlogger, and each runs as a unit of its
own: courier-pop.service (110, STLS included), courier-pop-ssl.service (995),
courier-imap.service (143, STARTTLS included), courier-imap-ssl.service (993).
A login is

    LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[46927]                  (POP3)
    LOGIN, user=alice, ip=[::ffff:192.0.2.11], port=[49469], protocol=IMAP   (IMAP)

and 5.2 adds `, stls=1` (POP3) or `, starttls=1` (IMAP) over TLS, which 5.0
writes only in the LOGOUT line. IPv4 clients are written IPv4-mapped (the
daemons listen on one IPv6 socket), IPv6 ones bare. Everything that is not a
login starts otherwise: `LOGIN FAILED, user=...`, `LOGIN FAILED, method=...`,
`Connection, ip=[...]`, `Disconnected, ip=[...]`, `LOGOUT, ...`.

The user name is written as the client sent it, before the address: a name
`x, ip=[192.0.2.50]` makes the line `LOGIN, user=x, ip=[192.0.2.50],
ip=[::ffff:192.0.2.30], port=[57497]`. Matched greedily and anchored at the
end, the user takes everything up to the *last* `, ip=[...]` that the fixed
tail follows, so the address is always the one the daemon wrote.
"""

from __future__ import annotations

import re

from pbs_activated.config import defaults
from pbs_activated.reader.logins.common import ADDRESS, IMAP, POP3, Login, MailServer, SessionKeys

_LOGIN = re.compile(
    rf"LOGIN, user=(?P<user>.+), ip=\[(?P<address>{ADDRESS})\], port=\[[0-9]+\]"
    r"(?:, protocol=(?P<protocol>IMAP))?(?:, (?:stls|starttls)=1)?"
)

SESSION_END = re.compile(
    rf"^LOGOUT, user=(?P<user>.+), (?P<session>ip=\[{ADDRESS}\], port=\[[0-9]+\]), "
    r"(?:top|headers)=(?:.*, time=(?P<duration>[0-9]+))?"
)
"""A logged-in session's end, `LOGOUT, user=alice, ip=[...], port=[...], ...,
time=0`: a session without a login ends in `LOGOUT, ip=[...]` or `Disconnected,
ip=[...]`. The client's address and port name the session, as in its LOGIN
line; `time=` is how many seconds it lasted."""

LOGIN_SESSION = re.compile(rf"(?P<session>ip=\[{ADDRESS}\], port=\[[0-9]+\])")
"""The address and port of a LOGIN line; its last match is the daemon's (the user comes first)."""


def session_started(groups: dict[str, str], ended: float) -> float | None:
    """When a Courier session began: its end, less the seconds LOGOUT's `time=` says it lasted."""
    duration = groups.get("duration")
    return ended - int(duration) - 1 if duration else None


def parse_courier(message: str) -> Login | None:
    """Return the login a Courier `LOGIN, user=..., ip=[...], port=[...]` line records."""
    if not message.startswith("LOGIN, user="):
        return None
    match = _LOGIN.fullmatch(message)
    if match is None:
        return None
    return Login(match["user"], match["address"], IMAP if match["protocol"] else POP3)


COURIER = MailServer(
    name="courier",
    units=defaults.SERVER_UNITS["courier"],
    parse=parse_courier,
    session_end=SESSION_END,
    sessions=SessionKeys(LOGIN_SESSION, session_started, own_process=False),
    versions="Courier-IMAP 5.0, courier-pop 1.0 (Debian 12); 5.2, 1.4 (Debian 13)",
)
