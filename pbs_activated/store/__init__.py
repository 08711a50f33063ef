"""The store (Redis or Valkey), and what can go wrong with it, sorted by what the caller
should do about it.

The modules of this package reach the store (lookup.py for the answer path,
writer.py for the reader and the CLI); the failures they raise live here, in
the package itself, below all of them and their callers: the handler imports
the package anyway, so they cost it no module of their own.

Every failure the handler, the reader and the CLI meet is one of these, whichever
client met it (our own RESP client or redis-py), so behaviour is decided by type:

- `StoreUnavailable`: nothing answered in time, or the connection broke. Try
  again later; the same server may well answer then.
- `ServerNotReady`: a server answered that it cannot serve *now* (loading its
  data, a replica asked to write, a master without its replicas, a cluster
  redirect). Another server may answer at once: with Sentinel, try the next.
- `StoreRefused`: the store refuses us for as long as nobody changes its
  configuration or ours (wrong password, an ACL that forbids the command, a
  script error). Waiting does not mend it: say so, loudly, as such.

The handler answers all three with the unavailable action (4xx): a client whose
login was recorded is told to try again, never refused. What differs is what
the journal says, and whether a next server is tried.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store did not give us what we asked for."""


class StoreUnavailable(StoreError):
    """No answer: down, unreachable, slow, or the connection closed."""


class ServerNotReady(StoreUnavailable):
    """This server answered that it cannot serve now; another one may."""


class ReplicationUnconfirmed(StoreUnavailable):
    """The master took a write but too few replicas confirmed it: send it again.

    Re-sending is safe, as every write here is idempotent, and necessary: a master
    that dies now takes the write with it.
    """


class StoreRefused(StoreError):
    """The store refuses us until an administrator changes a configuration."""


NOT_READY_CODES = frozenset(
    {"LOADING", "READONLY", "MASTERDOWN", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "BUSY", "OOM"}
)
"""Error codes after which a next server may answer, or this one soon (Redis's own first
words). OOM is one: a full store under `noeviction` takes writes again as keys expire."""

REFUSED_CODES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM", "WRONGTYPE", "NOSCRIPT"})
"""Error codes that waiting does not mend. Any other code (ERR, ...) counts too."""


def error_reply(text: str) -> StoreError:
    """The typed error for an error reply's text (without its `-`), e.g. `LOADING ...`.

    An unknown code is a refusal: an error Redis gives once it gives every time
    (a command it lacks, a script it rejects) until someone changes something.
    """
    code = text.split(" ", 1)[0]
    message = f"Redis: {text}"
    if code in NOT_READY_CODES:
        return ServerNotReady(message)
    return StoreRefused(message)


def describe(error: BaseException) -> str:
    """One line for an OS-level failure to reach the store."""
    if isinstance(error, TimeoutError):
        return "Redis did not answer in time"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot reach Redis: {error.strerror}"
    return f"cannot reach Redis: {error}"


def failure(error: BaseException) -> StoreError:
    """The typed error for anything a connection raised: ours as it is, the OS's described."""
    if isinstance(error, StoreError):
        return error
    return StoreUnavailable(describe(error))
