"""Least privilege in a cluster: who can write, on the servers and on the Sentinels.

A closed cluster (tests/cluster.py: Acl) runs what docs/cluster.md ships: every
server the ACL file of `pbs-activated store-acl` and docs/examples/cluster-redis.conf,
every Sentinel docs/examples/cluster-sentinel.conf. The question behind every test:
who can make Postfix relay? Only the reader (by writing a login) and an
administrator (by `grant`). Without a password, or with what a handler holds
(its store password, the Sentinels' password), nothing can be written through
the master, a replica or a Sentinel, nor can a server or a Sentinel be pointed
at a master of someone else's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
import redis
from cluster import EXAMPLES, SERVICE, Cluster, Server

from pbs_activated.config import RedisSettings
from pbs_activated.store import StoreRefused, acl, keys
from pbs_activated.store.lookup import Lookup
from pbs_activated.store.writer import Writer

ROGUE = ("127.0.0.1", "1")
"""A master of someone else's: nothing listens there, nothing may be pointed at it."""

SERVER_WRITES = [
    ("SET", "pbs:client:192.0.2.66", "mallory"),
    ("DEL", "pbs:client:192.0.2.10"),
    ("PEXPIREAT", "pbs:client:192.0.2.10", "99999999999999"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'mallory')", "1", "pbs:client:192.0.2.66"),
    ("FLUSHALL",),
    ("CONFIG", "SET", "replica-read-only", "no"),
    ("REPLICAOF", *ROGUE),
    ("SLAVEOF", *ROGUE),
    ("FAILOVER",),
    ("ACL", "SETUSER", "mallory", "on", ">x", "+@all", "~*"),
]
"""Writes and reconfigurations, each of which could authorize an address."""

SENTINEL_WRITES = [
    ("SENTINEL", "MONITOR", "rogue", *ROGUE, "1"),
    ("SENTINEL", "REMOVE", SERVICE),
    ("SENTINEL", "SET", SERVICE, "quorum", "1"),
    ("SENTINEL", "FAILOVER", SERVICE),
    ("SENTINEL", "RESET", "*"),
    ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
    ("SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "1", "1", "mallory"),
    ("PUBLISH", "__sentinel__:hello", f"127.0.0.1,1,{'0' * 40},99,{SERVICE},127.0.0.1,1,99"),
    ("ACL", "SETUSER", "mallory", "on", ">x", "+@all"),
]
"""What names a master: a rogue monitor, a changed one, a failover forced, a vote, a
forged hello message (a newer configuration with the rogue master), new users."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("closed"), replicas=1, sentinels=3, closed=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def as_user(server: Server, cluster: Cluster, user: str | None) -> redis.Redis:
    """A client of `server` over TCP, as `user` (None: without a password)."""
    assert cluster.acl is not None
    username, password = cluster.acl.login(user) if user else (None, None)
    return redis.Redis(*server.address, username=username, password=password, socket_timeout=2)


def sentinel_client(cluster: Cluster, password: str | None) -> redis.Redis:
    return redis.Redis(*cluster.sentinels[0].address, password=password, socket_timeout=2)


def handler_settings(cluster: Cluster, server: Server) -> RedisSettings:
    assert cluster.acl is not None
    settings = RedisSettings()
    settings.host, settings.port = server.address
    settings.username, settings.password = cluster.acl.login(acl.POLICY_USER)
    return settings


def servers(cluster: Cluster) -> dict[str, Server]:
    return {"master": cluster.servers[0], "replica": cluster.servers[1]}


@pytest.mark.parametrize("role", ["master", "replica"])
@pytest.mark.parametrize("command", SERVER_WRITES, ids=lambda command: " ".join(command[:2]))
def test_without_a_password_no_server_takes_a_command(
    cluster: Cluster, role: str, command: tuple[str, ...]
) -> None:
    with pytest.raises(redis.AuthenticationError):
        as_user(servers(cluster)[role], cluster, None).execute_command(*command)


@pytest.mark.parametrize("role", ["master", "replica"])
@pytest.mark.parametrize("command", SERVER_WRITES, ids=lambda command: " ".join(command[:2]))
def test_the_handler_user_writes_nothing_on_any_server(
    cluster: Cluster, role: str, command: tuple[str, ...]
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(servers(cluster)[role], cluster, acl.POLICY_USER).execute_command(*command)


@pytest.mark.parametrize("command", SENTINEL_WRITES, ids=lambda command: " ".join(command[:2]))
def test_without_a_password_no_sentinel_takes_a_command(
    cluster: Cluster, command: tuple[str, ...]
) -> None:
    with pytest.raises(redis.AuthenticationError):
        sentinel_client(cluster, None).execute_command(*command)


@pytest.mark.parametrize("command", SENTINEL_WRITES, ids=lambda command: " ".join(command[:2]))
def test_the_components_sentinel_password_changes_nothing(
    cluster: Cluster, command: tuple[str, ...]
) -> None:
    assert cluster.acl is not None
    password = cluster.acl.passwords[acl.SENTINEL_CLIENT_SECRET]
    with pytest.raises(redis.exceptions.NoPermissionError):
        sentinel_client(cluster, password).execute_command(*command)


def test_the_components_sentinel_password_tells_where_the_servers_are(cluster: Cluster) -> None:
    assert cluster.acl is not None
    sentinel = sentinel_client(cluster, cluster.acl.passwords[acl.SENTINEL_CLIENT_SECRET])
    host, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
    assert (host.decode(), int(port)) == cluster.servers[0].address
    assert len(sentinel.execute_command("SENTINEL", "REPLICAS", SERVICE)) == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        sentinel.execute_command("SENTINEL", "CONFIG", "GET", "*")  # nor how they are configured


def test_a_replica_takes_no_write_even_from_the_reader(cluster: Cluster) -> None:
    replica = as_user(cluster.servers[1], cluster, acl.JOURNAL_USER)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        replica.execute_command("SET", "pbs:client:192.0.2.66", "mallory")
    with pytest.raises(redis.exceptions.NoPermissionError):
        replica.execute_command("REPLICAOF", *ROGUE)


@pytest.mark.parametrize("user", [acl.REPLICA_USER, acl.SENTINEL_USER])
@pytest.mark.parametrize(
    "command",
    [
        ("GET", "pbs:client:192.0.2.10"),
        ("SET", "pbs:client:192.0.2.66", "mallory"),
        ("CONFIG", "SET", "replica-read-only", "no"),
        ("REPLICAOF", *ROGUE),
    ],
    ids=lambda command: command[0],
)
def test_redis_own_users_touch_no_key(
    cluster: Cluster, user: str, command: tuple[str, ...]
) -> None:
    """pbs-replica may only replicate, pbs-sentinel only watch and fail over (SLAVEOF)."""
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(cluster.servers[0], cluster, user).execute_command(*command)


def test_the_reader_authorizes_and_the_administrator_lists_and_revokes(cluster: Cluster) -> None:
    assert cluster.acl is not None
    settings = handler_settings(cluster, cluster.servers[0])
    settings.username, settings.password = cluster.acl.login(acl.JOURNAL_USER)
    reader = Writer(settings)
    expires = keys.now_ms() + 60_000
    assert reader.authorize("192.0.2.10", "alice", expires) is True
    assert reader.authorize("192.0.2.10", "alice", expires) is False
    settings.username, settings.password = cluster.acl.login(acl.ADMIN_USER)
    admin = Writer(settings)
    assert ("192.0.2.10", "alice") in [entry[:2] for entry in admin.list_authorized()]
    assert admin.revoke("192.0.2.10") is True


def test_the_policy_user_can_look_up_on_the_master_and_the_replica(cluster: Cluster) -> None:
    cluster.servers[0].client().set(keys.client_key("192.0.2.11"), "alice", ex=60)
    cluster.wait_for_replicas_in_sync()
    for server in cluster.servers:
        lookup = Lookup(handler_settings(cluster, server))
        try:
            assert lookup.user_for("192.0.2.11") == "alice"
            assert lookup.user_for("192.0.2.12") is None
        finally:
            lookup.close()


def test_the_policy_user_cannot_grant(cluster: Cluster) -> None:
    client = Writer(handler_settings(cluster, cluster.servers[0]))
    with pytest.raises(StoreRefused, match="(?i)permission"):
        client.authorize("192.0.2.10", "mallory", keys.now_ms() + 60_000)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.client.set(keys.client_key("192.0.2.10"), "mallory")


@pytest.mark.parametrize("user", [acl.POLICY_USER, acl.JOURNAL_USER])
def test_no_component_reaches_other_keys(cluster: Cluster, user: str) -> None:
    client = as_user(cluster.servers[0], cluster, user)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("session:1")


# The shipped examples say what acl.py says.


def example_lines(name: str) -> list[str]:
    lines = (EXAMPLES / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_sentinel_example_grants_what_acl_py_says() -> None:
    """Its `user` lines, with <secrets> for passwords, are acl.sentinel_acl's."""
    passwords = {name: f"secret-of-{name}" for name in acl.SENTINEL_SECRETS.values()}

    def hashed(line: str) -> str:
        line = re.sub(r"<([a-z-]+)>", lambda m: passwords[m.group(1)], line)
        return re.sub(r">(\S+)", lambda m: "#" + hashlib.sha256(m[1].encode()).hexdigest(), line)

    users = [hashed(line) for line in example_lines("cluster-sentinel.conf") if line[:5] == "user "]
    assert users == acl.sentinel_acl(passwords).splitlines()


def test_the_examples_log_in_as_acl_py_users() -> None:
    servers = example_lines("cluster-redis.conf")
    assert "masteruser pbs-replica" in servers and "masterauth <pbs-replica>" in servers
    assert any(line.startswith("aclfile ") for line in servers)
    sentinels = example_lines("cluster-sentinel.conf")
    for line in (
        f"sentinel auth-user {SERVICE} pbs-sentinel",
        f"sentinel auth-pass {SERVICE} <pbs-sentinel>",
        "sentinel sentinel-user pbs-sentinel",
        "sentinel sentinel-pass <pbs-sentinel>",
    ):
        assert line in sentinels
    assert {acl.REPLICA_USER, acl.SENTINEL_USER} <= set(acl.USERS)
