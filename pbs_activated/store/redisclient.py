"""redis-py for the writers: clients that try once within the timeout, errors typed.

The reader and the CLI use redis-py (writer.py); this module is what they need
to know of it, whichever version Debian ships (4.3 in Debian 12, 6.1 in 13):
how to build a client that behaves alike on both, and how its exceptions map
to the store's typed errors (store/__init__.py).
"""

from __future__ import annotations

from pbs_activated.store import StoreError, StoreUnavailable, error_reply

TYPE_CHECKING = False
if TYPE_CHECKING:
    import redis

    from pbs_activated.config import RedisSettings


def client_for(settings: RedisSettings, **where: object) -> redis.Redis:
    """A redis-py client: one attempt per command within `[redis] timeout` (see _one_attempt)."""
    import redis as redis_py

    return redis_py.Redis(
        username=settings.username or None,
        password=settings.password or None,
        db=settings.db,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        decode_responses=True,
        **_one_attempt(),
        **where,
    )


def _one_attempt() -> dict[str, object]:
    """redis-py options for one attempt per command and no CLIENT SETINFO, on 4.3 to 6.x.

    redis-py 6 (Debian 13's 6.1) gives every `Redis` a `Retry` of three more
    attempts with exponential back-off on connection errors and timeouts; 4.3
    (Debian 12's 4.3.4) gives none. With `timeout = 1`, a write on a kept
    connection to a stalled server took 10 s. `Retry(NoBackoff(), 0)` is one
    attempt on both, for connecting as for the command: the reader retries with
    its own back-off, and the CLI should answer at once. `retry_on_timeout`,
    `retry_on_error` and `health_check_interval` keep their defaults, which add
    no retry on either version.

    redis-py 5 and later also send CLIENT SETINFO LIB-NAME and LIB-VER on every new
    connection: refused for a restricted ACL user (an entry in its ACL LOG each
    time), and by Redis 7.0, which lacks the command. `lib_name=None,
    lib_version=None` turn them off, but 4.3 has no such keywords and refuses
    unknown ones, so they are passed only where redis-py's own signature lists
    them: the library says what it takes, with no table of which version added what.
    """
    import inspect

    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, object] = {"retry": Retry(NoBackoff(), 0)}
    if "lib_name" in inspect.signature(redis_py.Redis).parameters:
        options.update(lib_name=None, lib_version=None)
    return options


def translated(error: Exception) -> StoreError:
    """the store's typed error for one of redis-py's errors, with Redis's own text in one line.

    redis-py strips the code from the errors it names (NoPermissionError for
    NOPERM...) and keeps it in the others' text (`MASTERDOWN ...`): the code is
    put back, so the journal says what Redis said. Its pipeline errors quote the
    whole command (here the authorize script) before the reason: that is dropped.
    """
    from redis import exceptions

    reason = " ".join(str(error).rpartition(" of pipeline caused error: ")[2].split())
    reason = reason or type(error).__name__
    for name, code in _STRIPPED_CODES:
        kind = getattr(exceptions, name, None)  # OutOfMemoryError: not in redis-py 4.3
        if kind is not None and isinstance(error, kind) and not reason.startswith(code):
            reason = f"{code} {reason}"
            break
    if isinstance(error, exceptions.AuthenticationError) and "WRONGPASS" not in reason:
        reason = ("NOAUTH " if "required" in reason else "WRONGPASS ") + reason
    answered = (
        exceptions.ResponseError | exceptions.AuthenticationError | exceptions.BusyLoadingError
    )
    if isinstance(error, answered):  # Redis replied: typed by its code, as our own client does
        return error_reply(reason)
    return StoreUnavailable(f"Redis: {reason}")  # no reply: connection errors, timeouts


_STRIPPED_CODES = (
    ("NoPermissionError", "NOPERM"),
    ("BusyLoadingError", "LOADING"),
    ("ReadOnlyError", "READONLY"),
    ("OutOfMemoryError", "OOM"),
    ("NoScriptError", "NOSCRIPT"),
)
"""redis-py's named errors whose text lacks Redis's code, and the code."""
