"""Asking Redis before parsing (Lookup.prefetch): the reply is used only for its own key.

The handler sends the GET for the address it guesses from the raw request and
parses while Redis answers. A guess that turns out wrong, or a request that
needs no lookup at all, must leave the connection to Redis in step: the next
lookup gets its own reply, never the previous one's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from activation import PolicyService
from support import AuditSink, RedisServer, run_cli, write_config

from pbs_activated.config.load import load
from pbs_activated.store import StoreUnavailable
from pbs_activated.store.lookup import Lookup


@pytest.fixture
def lookup(config_file: Path) -> Lookup:
    return Lookup(load(str(config_file)).redis)


def connected(lookup: Lookup) -> Lookup:
    lookup.user_for("192.0.2.200")  # prefetch only uses a kept connection
    return lookup


def test_a_prefetched_reply_answers_its_own_address(
    lookup: Lookup, redis_server: RedisServer
) -> None:
    redis_server.client().set("pbs:client:192.0.2.10", "alice")
    connected(lookup).prefetch(["192.0.2.10"])
    assert lookup.user_for("192.0.2.10") == "alice"
    assert lookup.user_for("192.0.2.11") is None


def test_a_prefetch_for_another_address_is_read_and_not_used(
    lookup: Lookup, redis_server: RedisServer
) -> None:
    redis_server.client().set("pbs:client:192.0.2.10", "alice")
    connected(lookup).prefetch(["192.0.2.10"])
    assert lookup.user_for("192.0.2.11") is None
    assert lookup.user_for("192.0.2.10") == "alice"


def test_an_unused_prefetch_is_forgotten_and_the_next_lookup_gets_its_own_reply(
    lookup: Lookup, redis_server: RedisServer
) -> None:
    redis_server.client().set("pbs:client:192.0.2.10", "alice")
    connected(lookup).prefetch(["192.0.2.10"])
    lookup.forget_prefetch()
    assert lookup.user_for("192.0.2.11") is None
    assert lookup.users_for(["192.0.2.11", "192.0.2.10"]) == [None, "alice"]


def test_a_prefetched_mget_answers_users_for(lookup: Lookup, redis_server: RedisServer) -> None:
    redis_server.client().set("pbs:client:192.0.2.10", "alice")
    connected(lookup).prefetch(["192.0.2.10", "192.0.2.11"])
    assert lookup.users_for(["192.0.2.11", "192.0.2.10"]) == [None, "alice"]
    assert lookup.users_for(["192.0.2.10"]) == ["alice"]


def test_a_prefetch_without_a_connection_asks_nothing(lookup: Lookup) -> None:
    lookup.prefetch(["192.0.2.10"])
    lookup.forget_prefetch()
    assert lookup.user_for("192.0.2.10") is None


def test_a_prefetch_on_a_connection_redis_dropped_falls_back_to_asking_again(
    lookup: Lookup, redis_server: RedisServer
) -> None:
    connected(lookup)
    redis_server.stop()
    redis_server.start()
    redis_server.client().set("pbs:client:192.0.2.10", "alice")
    lookup.prefetch(["192.0.2.10"])
    assert lookup.user_for("192.0.2.10") == "alice"


def test_a_prefetch_while_redis_is_down_ends_in_store_unavailable(
    lookup: Lookup, redis_server: RedisServer
) -> None:
    connected(lookup)
    redis_server.stop()
    lookup.prefetch(["192.0.2.10"])
    with pytest.raises(StoreUnavailable):
        lookup.user_for("192.0.2.10")


def test_the_handler_stays_in_step_after_guesses_that_were_not_used(
    policy_service: PolicyService, config_file: Path
) -> None:
    run_cli("grant", "192.0.2.10", config=config_file)
    client = policy_service.connect()
    assert client.ask() == "OK"  # the connection to Redis is kept from here on
    twice = (
        b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
        b"client_address=192.0.2.10\nclient_address=192.0.2.11\n\n"
    )
    client.send(twice)  # guessed 192.0.2.10, parsed as malformed: no lookup
    assert client.reply() == "DUNNO"
    assert client.ask(client_address="192.0.2.11") == "DUNNO"
    assert client.ask(request="something_else") == "DUNNO"  # guessed, not looked up
    assert client.ask(client_address="192.0.2.12") == "DUNNO"
    assert client.ask() == "OK"
    assert client.ask(client_address="192.0.2.11") == "DUNNO"


def test_a_hang_met_by_a_prefetch_is_answered_within_one_timeout(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    """The lookup after a prefetch keeps the prefetch's deadline: one timeout, not two."""
    config = write_config(
        tmp_path / "hang.toml", f'[redis]\nurl = "{redis_server.url}"\ntimeout = 1.0\n'
    )
    run_cli("grant", "192.0.2.10", config=config)
    assert redis_server.process is not None
    with PolicyService(tmp_path, config, audit_sink.path) as service:
        client = service.connect()
        assert client.ask() == "OK"  # the connection to Redis is kept: the next one prefetches
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answer = client.ask()
            waited = time.monotonic() - started
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert answer is not None and answer.startswith("DEFER_IF_REJECT")
        assert waited < 1.0 + 0.4, waited
        assert client.ask() == "OK"
