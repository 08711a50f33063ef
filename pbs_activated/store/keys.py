"""Every key the store holds: what it is, who writes it, who reads it, how long it lives.

The store holds two families of keys, and this module is their only home; the
ACL rules (acl.py) grant access by their patterns, so a new family starts here.

`pbs:client:<normalised address>`, a string:
- value: the user who logged in from that address (or whom `grant` named);
- lifetime: its expiry (PXAT) is the end of the authorization, counted from the
  login's own time, so a replayed old login can never extend one;
- written by the reader (`writer.Writer.authorize`, one Lua script that only
  ever lengthens) and by `grant`/`revoke`/`migrate` (pbs-admin);
- read by the handler and the server (`lookup.Lookup`: GET, MGET) and by
  `list`/`check` (pbs-admin).

`pbs:deny:<user>`, a string, for a compromised account (`pbs-activated deny`):
- value: when the user was denied, in Unix seconds (what `list --denied` shows);
- lifetime: none; it lasts until `allow` removes it, while the password is reset;
- written by `deny`/`allow` (pbs-admin);
- read by the authorize script (the reader's and `grant`'s, EXISTS), so that no
  login of that user authorizes anything, on whichever host of a cluster it is
  taken: the key lives in the store and replicates with it. The handler never
  reads it: `deny` withdraws the user's standing authorizations as it starts.
- the user name is the one the mail server logs (and `list` shows), byte for byte.
"""

from __future__ import annotations

import time

CLIENT_PREFIX = "pbs:client:"
"""The prefix of every authorization's key."""

CLIENT_PATTERN = CLIENT_PREFIX + "*"
"""The glob of every authorization's key: SCAN's MATCH and the ACL's `~` pattern."""


DENY_PREFIX = "pbs:deny:"
"""The prefix of every denied user's key."""

DENY_PATTERN = DENY_PREFIX + "*"
"""The glob of every denied user's key."""


def client_key(address: str) -> str:
    """Return the key of a normalised client address."""
    return CLIENT_PREFIX + address


def address_of(key: str) -> str:
    """Return the client address a key stands for."""
    return key.removeprefix(CLIENT_PREFIX)


def deny_key(user: str) -> str:
    """Return the key that denies `user`'s logins."""
    return DENY_PREFIX + user


def user_of(key: str) -> str:
    """Return the user a deny key stands for."""
    return key.removeprefix(DENY_PREFIX)


def now_ms() -> int:
    """Return the wall clock in Unix milliseconds, the unit of PXAT."""
    return time.time_ns() // 1_000_000
