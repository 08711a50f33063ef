"""redis-py's errors come out of the writer as py's types (redisclient.translated)."""

from __future__ import annotations

import pytest
from redis import exceptions

from pbs_activated.store import ServerNotReady, StoreError, StoreRefused, StoreUnavailable
from pbs_activated.store.redisclient import translated


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (exceptions.AuthenticationError("invalid username-password pair"), StoreRefused),
        (exceptions.NoPermissionError("this user has no permissions"), StoreRefused),
        (exceptions.ResponseError("Error running script (call to f_1234)"), StoreRefused),
        (
            exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
            ServerNotReady,
        ),
        (
            exceptions.ReadOnlyError("You can't write against a read only replica."),
            ServerNotReady,
        ),
        (exceptions.ResponseError("MASTERDOWN Link with MASTER is down"), ServerNotReady),
        (exceptions.ConnectionError("Error 111 connecting"), StoreUnavailable),
        (exceptions.TimeoutError("Timeout reading from socket"), StoreUnavailable),
    ],
)
def test_each_redis_py_error_has_its_type(error: Exception, kind: type[StoreError]) -> None:
    assert type(translated(error)) is kind


def test_a_pipeline_error_keeps_only_the_reason() -> None:
    # redis-py quotes the whole command (the authorize script, many lines) first.
    error = exceptions.NoPermissionError(
        "Command # 1 (EVAL \nlocal current = redis.call('PEXPIRETIME', KEYS[1])\n...) of "
        "pipeline caused error: this user has no permissions to run the 'eval' command"
    )
    assert str(translated(error)) == (
        "Redis: NOPERM this user has no permissions to run the 'eval' command"
    )


def test_the_code_redis_py_strips_is_put_back() -> None:
    assert str(translated(exceptions.BusyLoadingError("Redis is loading"))).startswith(
        "Redis: LOADING "
    )
    wrong = exceptions.AuthenticationError("invalid username-password pair or user is disabled.")
    assert str(translated(wrong)).startswith("Redis: WRONGPASS ")
    assert str(translated(exceptions.AuthenticationError("Authentication required."))).startswith(
        "Redis: NOAUTH "
    )


def test_a_full_store_is_waited_for_not_refused() -> None:
    # noeviction: writes are refused until keys expire, which they do by themselves.
    full = exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    assert type(translated(full)) is ServerNotReady
