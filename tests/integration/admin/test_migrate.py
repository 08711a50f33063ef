"""`pbs-activated migrate`: an upgrade from 0.1.0's open store loses no authorization."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RedisServer, run_cli

from pbs_activated.store import keys


@pytest.fixture
def old_store(tmp_path: Path) -> Iterator[RedisServer]:
    """0.1.0's store: another redis-server, open, with keys of the same schema."""
    (tmp_path / "old").mkdir()
    old = RedisServer(tmp_path / "old")
    old.start()
    yield old
    old.stop()


def test_every_live_authorization_moves_with_its_expiry(
    old_store: RedisServer, redis_server: RedisServer, config_file: Path
) -> None:
    now = keys.now_ms()
    writer = old_store.client()
    writer.set(keys.client_key("192.0.2.7"), "alice", pxat=now + 600_000)
    writer.set(keys.client_key("2001:db8::7"), "bob", pxat=now + 60_000)
    writer.set("unrelated", "x")
    result = run_cli("migrate", "--from", old_store.url, config=config_file)
    assert "2 authorizations" in result.stdout and "2 copied" in result.stdout
    new = redis_server.client()
    assert new.get(keys.client_key("192.0.2.7")) == "alice"
    assert new.pexpiretime(keys.client_key("192.0.2.7")) == now + 600_000
    assert new.pexpiretime(keys.client_key("2001:db8::7")) == now + 60_000
    assert new.get("unrelated") is None


def test_a_copy_never_shortens_a_newer_login(
    old_store: RedisServer, redis_server: RedisServer, config_file: Path
) -> None:
    now = keys.now_ms()
    old_store.client().set(keys.client_key("192.0.2.7"), "alice", pxat=now + 60_000)
    redis_server.client().set(keys.client_key("192.0.2.7"), "alice", pxat=now + 900_000)
    run_cli("migrate", "--from", old_store.url, config=config_file)
    assert redis_server.client().pexpiretime(keys.client_key("192.0.2.7")) == now + 900_000


def test_an_unreachable_old_store_says_so_with_status_3(tmp_path: Path, config_file: Path) -> None:
    result = run_cli(
        "migrate", "--from", f"unix://{tmp_path}/absent.sock", config=config_file, check=False
    )
    assert result.returncode == 3
    assert result.stderr.startswith("pbs-activated: migrate: cannot read")


def test_the_upgrade_keeps_a_store_the_site_named_and_warns_when_it_is_open(
    tmp_path: Path, redis_server: RedisServer, config_file: Path
) -> None:
    result = run_cli(
        "migrate", "--only-to-own-store", "--from", "redis://127.0.0.1:1/0", config=config_file
    )
    assert result.stderr.startswith(f"pbs-activated: keeping the store {redis_server.url}; ")
    assert "every local user" in result.stderr
    assert result.stdout == ""
