"""Least privilege: the Redis ACL users that docs/cluster.md recommends, tested.

The handlers (on every SMTP host) only read one key at a time; the readers and
the admin commands write, confirm with ROLE and WAIT, and list. Giving each its
own user means a stolen handler password cannot grant anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cluster import Server

from pbs_activated import store
from pbs_activated.config import RedisSettings, parse_redis_url

ADMIN_PASSWORD = "admin-secret"

POLICY_ACL = "on >policy-secret resetkeys ~pbs:client:* resetchannels -@all +get +select"
WRITER_ACL = (
    "on >writer-secret resetkeys ~pbs:client:* resetchannels -@all +eval +role +wait +del "
    "+get +pttl +scan +select +pexpiretime +pexpireat +set"
)
"""As in docs/cluster.md; the script's own commands (PEXPIRETIME, SET, PEXPIREAT) count too."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, "acl-redis", ADMIN_PASSWORD)
    server.start()
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "pbs-policy", *POLICY_ACL.split())
    admin.execute_command("ACL", "SETUSER", "pbs-writer", *WRITER_ACL.split())
    try:
        yield server
    finally:
        server.kill()


def settings_for(server: Server, user: str, password: str) -> RedisSettings:
    settings = RedisSettings()
    parse_redis_url(f"redis://{user}:{password}@127.0.0.1:{server.port}/0", settings)
    return settings


def test_the_writer_user_can_authorize_revoke_and_list(server: Server) -> None:
    client = store.connect(settings_for(server, "pbs-writer", "writer-secret"))
    expires = store.now_ms() + 60_000
    assert store.authorize(client, "192.0.2.10", "alice", expires) is True
    assert store.authorize(client, "192.0.2.10", "alice", expires) is False
    assert [entry[:2] for entry in store.list_authorized(client)] == [("192.0.2.10", "alice")]
    assert store.revoke(client, "192.0.2.10") is True


def test_the_policy_user_can_look_up(server: Server) -> None:
    server.client().set(store.client_key("192.0.2.10"), "alice", ex=60)
    lookup = store.Lookup(settings_for(server, "pbs-policy", "policy-secret"))
    try:
        assert lookup.user_for("192.0.2.10") == "alice"
        assert lookup.user_for("192.0.2.11") is None
    finally:
        lookup.close()


def test_the_policy_user_cannot_grant(server: Server) -> None:
    client = store.connect(settings_for(server, "pbs-policy", "policy-secret"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        store.authorize(client, "192.0.2.10", "mallory", store.now_ms() + 60_000)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(store.client_key("192.0.2.10"), "mallory")


def test_neither_user_reaches_other_keys(server: Server) -> None:
    server.client().set("session:1", "secret")
    for user, password in (("pbs-policy", "policy-secret"), ("pbs-writer", "writer-secret")):
        client = store.connect(settings_for(server, user, password))
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("session:1")
