"""acknowledge.Acknowledger: which failures are waited for, which are refusals, which are bugs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pbs_activated.config import RedisSettings
from pbs_activated.reader.acknowledge import Acknowledger
from pbs_activated.reader.notify import Counts, Notifier
from pbs_activated.store import ServerNotReady, StoreRefused, StoreUnavailable


def acknowledger(statuses: list[str]) -> Acknowledger:
    notifier = Notifier(send=lambda message: statuses.append(message.removeprefix("STATUS=")))
    writer: Any = object()  # the operations below never use it
    store = Acknowledger(RedisSettings(), notifier, Counts(), connect=lambda settings: writer)
    store.initial_delay = store.maximum_delay = 0.001
    return store


def failing(*errors: Exception) -> Callable[[object], str]:
    """An operation that raises each error in turn, then returns "done"."""
    pending = list(errors)

    def operation(writer: object) -> str:
        if pending:
            raise pending.pop(0)
        return "done"

    return operation


def test_a_server_not_ready_is_waited_for_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    statuses: list[str] = []
    loading = ServerNotReady("Redis: LOADING Redis is loading the dataset in memory")
    assert acknowledger(statuses).until_acknowledged(failing(loading), "reaching Redis") == "done"
    assert statuses[0].startswith("Waiting for Redis (Redis: LOADING Redis is loading")
    assert statuses[-1].startswith("Catching up")
    assert "Redis is back after" in capsys.readouterr().err


def test_a_refusal_is_logged_once_at_error_priority_and_retried_until_mended(
    capsys: pytest.CaptureFixture[str],
) -> None:
    statuses: list[str] = []
    refused = [StoreRefused("Redis: NOPERM no permissions to run the 'eval' command")] * 3
    assert acknowledger(statuses).until_acknowledged(failing(*refused), "authorizing x") == "done"
    assert statuses[0].startswith("Refused by the store (Redis: NOPERM no permissions")
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "refuses" in line] == [
        "<3>pbs-activated journal: the store refuses the reader (Redis: NOPERM no permissions "
        "to run the 'eval' command) while authorizing x: check the reader's ACL user and "
        "secret and the store's ACL (pbs-activated(8), SECURITY); retrying every 0.001 s"
    ]
    assert lines[-1] == "pbs-activated journal: the store accepts the reader again after 0.0 s"


def test_a_refusal_turning_into_an_outage_and_back_is_said_each_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    statuses: list[str] = []
    errors = [StoreRefused("Redis: WRONGPASS"), StoreUnavailable("Redis: down")]
    acknowledger(statuses).until_acknowledged(failing(*errors, errors[0]), "reaching Redis")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [
        "the store refuses the reader",
        "the store no longer refuses the reader but is unavailable",
        "the store refuses the reader",
        "the store accepts the reader again after 0.0 s",
    ]
    assert [status.split(" (")[0] for status in statuses] == [
        "Refused by the store",
        "Waiting for Redis",
        "Refused by the store",
        "Catching up: 0 entries, 0 logins: 0 authorized, 0 already authorized, 0 denied, 0 "
        "expired, 0 "
        "ignored, 0 invalid",
    ]


def test_an_error_that_is_not_the_stores_is_a_bug_and_is_not_retried() -> None:
    with pytest.raises(KeyError):
        acknowledger([]).until_acknowledged(failing(KeyError("bug")), "authorizing x")
