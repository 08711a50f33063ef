"""Every key the store holds: what it is, who writes it, who reads it, how long it lives.

The store holds one family of keys, and this module is its only home; the ACL
rules (acl.py) grant access by its pattern, so a new family starts here.

`pbs:client:<normalised address>`, a string:
- value: the user who logged in from that address (or whom `grant` named);
- lifetime: its expiry (PXAT) is the end of the authorization, counted from the
  login's own time, so a replayed old login can never extend one;
- written by the reader (`writer.Writer.authorize`, one Lua script that only
  ever lengthens) and by `grant`/`revoke`/`migrate` (pbs-admin);
- read by the handler and the server (`lookup.Lookup`: GET, MGET) and by
  `list`/`check` (pbs-admin).
"""

from __future__ import annotations

import time

CLIENT_PREFIX = "pbs:client:"
"""The prefix of every authorization's key."""

CLIENT_PATTERN = CLIENT_PREFIX + "*"
"""The glob of every authorization's key: SCAN's MATCH and the ACL's `~` pattern."""


def client_key(address: str) -> str:
    """Return the key of a normalised client address."""
    return CLIENT_PREFIX + address


def address_of(key: str) -> str:
    """Return the client address a key stands for."""
    return key.removeprefix(CLIENT_PREFIX)


def now_ms() -> int:
    """Return the wall clock in Unix milliseconds, the unit of PXAT."""
    return time.time_ns() // 1_000_000
