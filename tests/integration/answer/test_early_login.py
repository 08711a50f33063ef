"""The handler's login goes out before Postfix's first request is read, by a real redis-server.

`Lookup.connect` opens the connection and sends AUTH (and SELECT) without waiting;
their replies are read, and checked, before the first question's. A refused or
missing store is found by the first lookup exactly as it was without it.
"""

from __future__ import annotations

import pytest
from support import RedisServer

from pbs_activated.config import RedisSettings
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreRefused, StoreUnavailable, acl, keys, resp
from pbs_activated.store.lookup import Lookup

ADDRESS = "192.0.2.10"
USER = acl.POLICY_USER
ADMIN = ("--user", "admin", "--pass", "adminpw")


@pytest.fixture
def server(closed_server: RedisServer) -> RedisServer:
    """The handler's user may read authorizations (and SELECT); one is there to read."""
    closed_server.command(*ADMIN, "SET", keys.client_key(ADDRESS), "alice")
    return closed_server


def lookup_for(server: RedisServer, password: str = "secret", db: int = 0) -> Lookup:
    settings = RedisSettings()
    parse_redis_url(f"unix://{USER}:{password}@{server.socket_path}?db={db}", settings)
    settings.timeout = 2.0
    return Lookup(settings)


def clients(server: RedisServer) -> int:
    listing = server.command(*ADMIN, "CLIENT", "LIST")
    return len(listing.splitlines()) - 1  # less redis-cli's own


class CountingSends:
    """Counts the sends of every resp.Connection: one per round trip we start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = resp.Connection.send

        def send(connection: resp.Connection, data: bytes) -> None:
            self.count += 1
            original(connection, data)

        monkeypatch.setattr(resp.Connection, "send", send)


def test_connect_logs_in_and_the_first_lookup_answers(server: RedisServer) -> None:
    lookup = lookup_for(server)
    try:
        lookup.connect()
        assert clients(server) == 1  # connected before any question
        assert lookup.user_for(ADDRESS) == "alice"
        assert lookup.user_for("192.0.2.11") is None
        assert clients(server) == 1  # the same connection throughout
    finally:
        lookup.close()


def test_the_login_and_the_prefetch_go_out_before_any_reply_is_read(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = CountingSends(monkeypatch)
    lookup = lookup_for(server)
    try:
        lookup.connect()
        lookup.prefetch([ADDRESS])
        assert sends.count == 2  # AUTH, then GET: neither waited for a reply
        assert lookup.user_for(ADDRESS) == "alice"
        assert sends.count == 2  # the prefetched reply answered
    finally:
        lookup.close()


def test_auth_and_select_go_in_one_send_and_select_counts(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.command(*ADMIN, "-n", "3", "SET", keys.client_key("192.0.2.30"), "carol")
    sends = CountingSends(monkeypatch)
    lookup = lookup_for(server, db=3)
    try:
        assert lookup.user_for("192.0.2.30") == "carol"
        assert lookup.user_for(ADDRESS) is None  # db 0's key is not in db 3
        assert sends.count == 3  # the login (AUTH and SELECT) in one, then each GET
    finally:
        lookup.close()


def test_a_wrong_password_sent_early_is_refused_at_the_first_lookup(server: RedisServer) -> None:
    lookup = lookup_for(server, password="guessed")
    try:
        lookup.connect()
        with pytest.raises(StoreRefused, match="WRONGPASS"):
            lookup.user_for(ADDRESS)
    finally:
        lookup.close()


def test_a_wrong_password_sent_early_refuses_a_prefetched_lookup(server: RedisServer) -> None:
    """The GET sent after a refused AUTH is never taken for an answer."""
    lookup = lookup_for(server, password="guessed")
    try:
        lookup.connect()
        lookup.prefetch([ADDRESS])
        with pytest.raises(StoreRefused, match="WRONGPASS"):
            lookup.user_for(ADDRESS)
    finally:
        lookup.close()


def test_connect_to_a_store_that_is_down_costs_nothing_and_the_lookup_reports_it(
    server: RedisServer,
) -> None:
    lookup = lookup_for(server)
    server.stop()
    try:
        lookup.connect()  # no error here: the lookup is where a failure is reported
        with pytest.raises(StoreUnavailable):
            lookup.user_for(ADDRESS)
    finally:
        lookup.close()


def test_connect_leaves_a_tcp_store_to_the_first_lookup(server: RedisServer) -> None:
    """A TCP connect may hang until the timeout: the first lookup's, bounded once."""
    settings = RedisSettings()
    parse_redis_url(f"redis://{USER}:secret@127.0.0.1:{server.port}/0", settings)
    lookup = Lookup(settings)
    try:
        lookup.connect()
        assert clients(server) == 0
        assert lookup.user_for(ADDRESS) == "alice"
    finally:
        lookup.close()
