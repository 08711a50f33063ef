"""Each kind of store failure is reported as what it is, by a real redis-server.

A server loading its data, a wrong password and a forbidden command all get the
unavailable answer (4xx: the client tries again), but the audit reason says
which, and only "loading" counts as something that passes by itself.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RedisServer

from pbs_activated.answer import Request
from pbs_activated.answer.decision import decide
from pbs_activated.config import PolicySettings, RedisSettings
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import ServerNotReady, StoreRefused, acl, keys
from pbs_activated.store.lookup import Lookup

ADDRESS = "192.0.2.10"
RCPT = Request(
    {"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": ADDRESS}
)


def settings_for(url: str, timeout: float = 1.0) -> RedisSettings:
    settings = RedisSettings()
    parse_redis_url(url, settings)
    settings.timeout = timeout
    return settings


@pytest.fixture
def loading_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server with enough keys that reloading them, slowed down, takes seconds."""
    server = RedisServer(
        tmp_path,
        arguments=(
            "--enable-debug-command",
            "local",
            "--loading-process-events-interval-bytes",
            "1024",
        ),
    )
    server.start()
    server.command("DEBUG", "POPULATE", "20000", "filler")
    server.command("SET", keys.client_key(ADDRESS), "alice")
    server.command("CONFIG", "SET", "key-load-delay", "100")  # µs per key: about 2 s in all
    try:
        yield server
    finally:
        server.stop()


def reload_in_background(server: RedisServer) -> threading.Thread:
    """DEBUG RELOAD: the server saves, then loads its data again, answering LOADING meanwhile."""

    def reload() -> None:
        subprocess.run(
            ["redis-cli", "-s", str(server.socket_path), "DEBUG", "RELOAD"],
            capture_output=True,
            timeout=60,
            check=False,
        )

    thread = threading.Thread(target=reload, daemon=True)
    thread.start()
    return thread


def test_a_loading_server_is_not_ready_and_answered_unavailable(
    loading_server: RedisServer,
) -> None:
    lookup = Lookup(settings_for(loading_server.url))
    try:
        assert lookup.user_for(ADDRESS) == "alice"
        reloading = reload_in_background(loading_server)
        deadline = time.monotonic() + 10
        while True:
            try:
                lookup.user_for(ADDRESS)
            except ServerNotReady as error:
                assert "LOADING" in str(error)
                break
            assert time.monotonic() < deadline, "never saw LOADING"
            time.sleep(0.01)
        decision = decide(RCPT, PolicySettings(), lookup.user_for)
        assert decision.action == PolicySettings().unavailable
        assert "LOADING" in decision.reason
        reloading.join(60)
        assert lookup.user_for(ADDRESS) == "alice"  # and it passes by itself
    finally:
        lookup.close()


def url_as(server: RedisServer, user: str, password: str) -> str:
    return f"unix://{user}:{password}@{server.socket_path}"


def test_a_wrong_password_is_a_refusal_and_answered_unavailable(closed_server: RedisServer) -> None:
    lookup = Lookup(settings_for(url_as(closed_server, acl.POLICY_USER, "guessed")))
    try:
        with pytest.raises(StoreRefused, match="WRONGPASS"):
            lookup.user_for(ADDRESS)
        decision = decide(RCPT, PolicySettings(), lookup.user_for)
        assert decision.action == PolicySettings().unavailable
        assert "WRONGPASS" in decision.reason
    finally:
        lookup.close()


def test_no_password_is_a_refusal(closed_server: RedisServer) -> None:
    lookup = Lookup(settings_for(closed_server.url))
    try:
        with pytest.raises(StoreRefused, match="NOAUTH"):
            lookup.user_for(ADDRESS)
    finally:
        lookup.close()


def test_a_forbidden_command_is_a_refusal_for_the_writer(closed_server: RedisServer) -> None:
    from pbs_activated.store.writer import Writer

    writer = Writer(settings_for(url_as(closed_server, acl.POLICY_USER, "secret")))
    try:
        with pytest.raises(StoreRefused, match="(?i)permission"):
            writer.authorize(ADDRESS, "mallory", keys.now_ms() + 60_000)
    finally:
        writer.close()


def test_a_refusal_mended_at_runtime_answers_at_the_next_lookup(closed_server: RedisServer) -> None:
    """NOPERM is read whole, the connection stays in step, and a mended ACL works at once."""
    lookup = Lookup(settings_for(url_as(closed_server, acl.POLICY_USER, "secret")))
    admin = ("--user", "admin", "--pass", "adminpw")
    try:
        assert lookup.user_for(ADDRESS) is None
        closed_server.command(*admin, "ACL", "SETUSER", acl.POLICY_USER, "-get")
        with pytest.raises(StoreRefused, match="(?i)noperm|permission"):
            lookup.user_for(ADDRESS)
        assert lookup.users_for([ADDRESS, "192.0.2.11"]) == [None, None]  # MGET is still allowed
        closed_server.command(*admin, "ACL", "SETUSER", acl.POLICY_USER, "+get")
        assert lookup.user_for(ADDRESS) is None
    finally:
        lookup.close()
