"""The store closed by ACL users (acl.py), on a real redis-server: who may do what.

The question behind every test: who can make Postfix relay? Only the reader (by
writing a login) and an administrator (by `grant`); the handler only reads,
and anyone without a secret can do nothing at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from closedstore import ClosedStore
from support import PYTHON, package_for_other_users, run_cli, write_config

from pbs_activated.store import StoreRefused, acl, keys
from pbs_activated.store.lookup import Lookup
from pbs_activated.store.writer import Writer

NOBODY = 65534
ADMIN_GID = 64999
"""A group id no account on the host has: stands for pbs-activated-admin."""


def test_the_acl_file_holds_hashes_not_secrets(closed_store: ClosedStore) -> None:
    text = closed_store.acl_file.read_text()
    assert all(password not in text for password in closed_store.passwords.values())
    assert os.stat(closed_store.acl_file).st_mode & 0o077 == 0


def test_without_a_password_nothing_can_be_read_or_written(closed_store: ClosedStore) -> None:
    anonymous = redis.Redis(unix_socket_path=str(closed_store.server.socket_path))
    for command in (("GET", "pbs:client:192.0.2.7"), ("SET", "pbs:client:192.0.2.7", "x")):
        with pytest.raises(redis.AuthenticationError):
            anonymous.execute_command(*command)


def test_the_default_user_is_disabled(closed_store: ClosedStore) -> None:
    anonymous = redis.Redis(unix_socket_path=str(closed_store.server.socket_path))
    with pytest.raises(redis.ResponseError, match="WRONGPASS"):
        anonymous.execute_command("AUTH", "default", "")


def test_a_wrong_password_is_refused(closed_store: ClosedStore) -> None:
    with pytest.raises(StoreRefused, match="WRONGPASS"):
        Writer(closed_store.settings(acl.JOURNAL_USER, "guessed")).ping()


def test_the_reader_writes_an_authorization_the_handler_reads(closed_store: ClosedStore) -> None:
    reader = closed_store.client(acl.JOURNAL_USER)
    assert reader.authorize("192.0.2.7", "alice", keys.now_ms() + 60_000)
    lookup = Lookup(closed_store.settings(acl.POLICY_USER))
    try:
        assert lookup.user_for("192.0.2.7") == "alice"
        assert lookup.users_for(["192.0.2.7", "192.0.2.8"]) == ["alice", None]
    finally:
        lookup.close()


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "pbs:client:192.0.2.9", "mallory"),
        ("DEL", "pbs:client:192.0.2.7"),
        ("PEXPIREAT", "pbs:client:192.0.2.7", "99999999999999"),
        ("EVAL", "return 1", "0"),
        ("FLUSHALL",),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("ACL", "SETUSER", "mallory", "on", ">x", "+@all", "~*"),
    ],
)
def test_the_handler_user_can_change_nothing(
    closed_store: ClosedStore, command: tuple[str, ...]
) -> None:
    handler = closed_store.client(acl.POLICY_USER)
    with pytest.raises(redis.exceptions.NoPermissionError):
        handler.client.execute_command(*command)


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "pbs:client:192.0.2.7"),
        ("MGET", "pbs:client:192.0.2.7"),
        ("SCAN", "0"),
        ("KEYS", "*"),
        ("SET", "elsewhere", "x"),
        ("GET", "elsewhere"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("ACL", "LIST"),
    ],
)
def test_the_reader_user_reads_no_value_and_touches_no_other_key(
    closed_store: ClosedStore, command: tuple[str, ...]
) -> None:
    reader = closed_store.client(acl.JOURNAL_USER)
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.client.execute_command(*command)


def test_the_reader_user_cannot_reach_other_keys_through_a_script(
    closed_store: ClosedStore,
) -> None:
    reader = closed_store.client(acl.JOURNAL_USER)
    with pytest.raises(redis.ResponseError, match="(?i)permission|noperm"):
        script = "return redis.call('SET', KEYS[1], 'x')"
        reader.client.execute_command("EVAL", script, 1, "elsewhere")


def test_the_admin_user_grants_lists_and_revokes(closed_store: ClosedStore) -> None:
    admin = closed_store.client(acl.ADMIN_USER)
    assert admin.authorize("192.0.2.7", "alice", keys.now_ms() + 60_000)
    assert [entry[:2] for entry in admin.list_authorized()] == [("192.0.2.7", "alice")]
    assert admin.revoke("192.0.2.7")
    with pytest.raises(redis.exceptions.NoPermissionError):
        admin.client.execute_command("FLUSHALL")


def test_store_acl_refuses_to_write_a_file_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("store-acl", "--secrets", str(tmp_path / "empty"), check=False)
    assert result.returncode == 2
    assert "no secret" in result.stderr and "pbs-policy" in result.stderr


# The CLI: root and the admin group only.


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may read: an unprivileged CLI must reach its config."""
    directory = Path(tempfile.mkdtemp(prefix="pbs-cli-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def run_cli_as(
    uid: int, gid: int, *arguments: str, groups: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The CLI as another user, from a copy of this checkout's package that user can read."""
    as_user = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
        "--",
    ]
    return subprocess.run(
        [*as_user, PYTHON, "-m", "pbs_activated", *arguments],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(package_for_other_users()),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def admin_config(shared_dir: Path, closed: ClosedStore) -> Path:
    """A config for `closed` with component users, its admin secret root:ADMIN_GID 0640."""
    secret = shared_dir / "pbs-admin"
    secret.write_text(closed.passwords[acl.ADMIN_USER] + "\n")
    os.chown(secret, 0, ADMIN_GID)
    secret.chmod(0o640)
    socket_dir = closed.server.socket_path.parent
    for directory in (socket_dir, *socket_dir.parents):
        if directory == Path("/"):
            break
        directory.chmod(directory.stat().st_mode | 0o001)  # let the admin reach the socket
    closed.server.socket_path.chmod(0o777)  # the ACL alone decides, as on the admin socket
    config = write_config(
        shared_dir / "pbs-activated.toml",
        f'[redis]\nurl = "{closed.server.url}"\ncredentials = "component"\n'
        f'admin_password_file = "{secret}"\n',
    )
    config.chmod(0o644)
    return config


@pytest.mark.parametrize(
    "arguments",
    [
        ("grant", "192.0.2.7"),
        ("revoke", "192.0.2.7"),
        ("list",),
        ("check", "192.0.2.7"),
        ("migrate", "--from", "redis://127.0.0.1:1/0"),
    ],
)
def test_the_cli_refuses_a_user_who_is_not_an_administrator(
    shared_dir: Path, closed_store: ClosedStore, arguments: tuple[str, ...]
) -> None:
    config = admin_config(shared_dir, closed_store)
    result = run_cli_as(NOBODY, NOBODY, "--config", str(config), *arguments)
    assert result.returncode == 77
    assert result.stderr == (
        "pbs-activated: permission denied: run as root or as a member of group "
        "pbs-activated-admin\n"
    )
    assert result.stdout == ""


def test_the_cli_works_for_a_member_of_the_admin_group(
    shared_dir: Path, closed_store: ClosedStore
) -> None:
    config = admin_config(shared_dir, closed_store)
    granted = run_cli_as(
        NOBODY, NOBODY, "--config", str(config), "grant", "192.0.2.7", groups=(ADMIN_GID,)
    )
    assert granted.returncode == 0, granted.stderr
    listed = run_cli_as(NOBODY, NOBODY, "--config", str(config), "list", groups=(ADMIN_GID,))
    assert listed.stdout.startswith("192.0.2.7\t-\t")
    checked = run_cli_as(
        NOBODY, NOBODY, "--config", str(config), "check", "192.0.2.7", groups=(ADMIN_GID,)
    )
    assert checked.stdout == "OK\n"


def test_root_logs_in_as_the_admin_user(shared_dir: Path, closed_store: ClosedStore) -> None:
    config = admin_config(shared_dir, closed_store)
    run_cli("grant", "192.0.2.7", "--user", "alice", config=config)
    assert run_cli("list", config=config).stdout.startswith("192.0.2.7\talice\t")
