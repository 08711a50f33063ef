"""`pbs-activated migrate`: an upgrade from 0.1.0's open store loses no authorization."""

from __future__ import annotations

from pathlib import Path

from support import RedisServer, run_cli

from pbs_activated import store


def test_every_live_authorization_moves_with_its_expiry(
    tmp_path: Path, redis_server: RedisServer, config_file: Path
) -> None:
    old = RedisServer(tmp_path / "old")
    (tmp_path / "old").mkdir()
    old.start()
    try:
        now = store.now_ms()
        writer = old.client()
        writer.set(store.client_key("192.0.2.7"), "alice", pxat=now + 600_000)
        writer.set(store.client_key("2001:db8::7"), "bob", pxat=now + 60_000)
        writer.set("unrelated", "x")
        result = run_cli("migrate", "--from", old.url, config=config_file)
    finally:
        old.stop()
    assert "2 authorizations" in result.stdout and "2 copied" in result.stdout
    new = redis_server.client()
    assert new.get(store.client_key("192.0.2.7")) == "alice"
    assert new.pexpiretime(store.client_key("192.0.2.7")) == now + 600_000
    assert new.pexpiretime(store.client_key("2001:db8::7")) == now + 60_000
    assert new.get("unrelated") is None


def test_a_copy_never_shortens_a_newer_login(
    tmp_path: Path, redis_server: RedisServer, config_file: Path
) -> None:
    old = RedisServer(tmp_path / "old")
    (tmp_path / "old").mkdir()
    old.start()
    try:
        now = store.now_ms()
        old.client().set(store.client_key("192.0.2.7"), "alice", pxat=now + 60_000)
        redis_server.client().set(store.client_key("192.0.2.7"), "alice", pxat=now + 900_000)
        run_cli("migrate", "--from", old.url, config=config_file)
    finally:
        old.stop()
    assert redis_server.client().pexpiretime(store.client_key("192.0.2.7")) == now + 900_000


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
