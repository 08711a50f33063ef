"""The handler's lookup in a cluster: through the Sentinels, or on a local replica.

`Lookup` is what every handler process runs; here it talks to real
redis-server and redis-sentinel processes on loopback (tests/cluster.py), closed
as docs/cluster.md says: the handler logs in as pbs-policy, and to the
Sentinels with their password.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, Server, free_port

from pbs_activated.config import RedisSettings
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreRefused, StoreUnavailable, acl, keys
from pbs_activated.store.lookup import Lookup
from pbs_activated.store.writer import Writer

ADDRESS = "192.0.2.10"
TIMEOUT = 1.0


def start_cluster(directory: Path) -> Cluster:
    cluster = Cluster(directory, replicas=2, sentinels=3, closed=True)
    cluster.start()
    writer = Writer(through_sentinels(cluster, user=acl.JOURNAL_USER))
    writer.authorize(ADDRESS, "alice", keys.now_ms() + 600_000)
    cluster.wait_for_replicas_in_sync()
    return cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster the tests below only read from."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for tests that kill parts of it."""
    cluster = start_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


def through_sentinels(
    cluster: Cluster,
    sentinels: list[tuple[str, int]] | None = None,
    sentinel_password: str | None = None,
    user: str = acl.POLICY_USER,
) -> RedisSettings:
    """`[redis]` through the Sentinels, logged in as `user` (the handler's by default)."""
    assert cluster.acl is not None
    settings = RedisSettings()
    settings.timeout = TIMEOUT
    settings.username, settings.password = cluster.acl.login(user)
    if sentinel_password is None:
        sentinel_password = cluster.acl.passwords[acl.SENTINEL_CLIENT_SECRET]
    settings.sentinel_password = sentinel_password
    settings.sentinels = tuple(sentinels or [s.address for s in cluster.sentinels])
    return settings


def lookup_user(settings: RedisSettings, address: str = ADDRESS) -> str | None:
    lookup = Lookup(settings)
    try:
        return lookup.user_for(address)
    finally:
        lookup.close()


def test_lookup_through_the_sentinels_finds_an_authorization(shared_cluster: Cluster) -> None:
    settings = through_sentinels(shared_cluster)
    assert lookup_user(settings) == "alice"
    assert lookup_user(settings, "192.0.2.99") is None


def test_lookup_reads_from_the_master_the_sentinels_name(shared_cluster: Cluster) -> None:
    lookup = Lookup(through_sentinels(shared_cluster))
    try:
        assert lookup.user_for(ADDRESS) == "alice"
        assert lookup._connection is not None
        assert lookup._connection.socket.getpeername()[1] == shared_cluster.master().port
    finally:
        lookup.close()


def test_lookup_asks_the_next_sentinel_when_one_is_down(shared_cluster: Cluster) -> None:
    nobody = ("127.0.0.1", free_port())
    sentinels = [nobody] + [s.address for s in shared_cluster.sentinels]
    assert lookup_user(through_sentinels(shared_cluster, sentinels)) == "alice"


def test_a_silent_sentinel_costs_only_its_share_of_the_timeout(shared_cluster: Cluster) -> None:
    """A sentinel on a host that accepts but never answers must not use up the budget."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        sentinels = [silent.getsockname()] + [s.address for s in shared_cluster.sentinels[:1]]
        started = time.monotonic()
        assert lookup_user(through_sentinels(shared_cluster, sentinels)) == "alice"
        elapsed = time.monotonic() - started
    # It waited for the silent one, but only its half: the whole budget would have
    # left nothing for the second sentinel, and the lookup would have failed.
    assert elapsed > TIMEOUT / 2 - 0.1


def test_lookup_is_unavailable_when_no_sentinel_answers(shared_cluster: Cluster) -> None:
    sentinels = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    with pytest.raises(StoreUnavailable, match="sentinel 127.0.0.1:"):
        lookup_user(through_sentinels(shared_cluster, sentinels))


def test_lookup_with_a_wrong_sentinel_password_is_unavailable(shared_cluster: Cluster) -> None:
    settings = through_sentinels(shared_cluster, sentinel_password="wrong")
    with pytest.raises(StoreRefused, match="WRONGPASS|invalid"):
        lookup_user(settings)


def test_lookup_with_a_wrong_redis_password_is_unavailable(shared_cluster: Cluster) -> None:
    settings = through_sentinels(shared_cluster)
    settings.password = "wrong"
    with pytest.raises(StoreRefused, match="WRONGPASS|invalid"):
        lookup_user(settings)


def test_lookup_reads_a_replica_while_the_master_is_down(cluster: Cluster) -> None:
    """Between the master's death and the promotion, the Sentinels still name the dead
    master: the replicas they know answer instead."""
    cluster.master().kill()
    assert lookup_user(through_sentinels(cluster)) == "alice"


def test_a_kept_connection_follows_a_failover(cluster: Cluster) -> None:
    """A handler serving a long Postfix connection outlives its master."""
    lookup = Lookup(through_sentinels(cluster))
    try:
        assert lookup.user_for(ADDRESS) == "alice"
        old_master = cluster.master()
        old_master.kill()
        assert lookup.user_for(ADDRESS) == "alice"
        cluster.wait_for_new_master(old_master)
        lookup.close()
        assert lookup.user_for(ADDRESS) == "alice"
        assert lookup._connection is not None
        assert lookup._connection.socket.getpeername()[1] == cluster.master().port
    finally:
        lookup.close()


def test_a_master_loading_its_data_is_passed_over_for_a_replica(tmp_path: Path) -> None:
    """LOADING is ServerNotReady: with Sentinel, the next server answers at once.

    An open cluster of its own (no ACL users), so that redis-cli may DEBUG the master.
    """
    cluster = Cluster(tmp_path / "cluster", replicas=1, sentinels=3)
    cluster.start()
    try:
        master = cluster.master()
        admin = ["redis-cli", "-s", str(master.socket_path)]
        subprocess.run([*admin, "SET", keys.client_key(ADDRESS), "alice"], check=True, timeout=10)
        subprocess.run([*admin, "DEBUG", "POPULATE", "20000", "filler"], check=True, timeout=30)
        cluster.wait_for_replicas_in_sync()
        for option, value in (
            ("key-load-delay", "100"),
            ("loading-process-events-interval-bytes", "1024"),
        ):
            subprocess.run([*admin, "CONFIG", "SET", option, value], check=True, timeout=10)
        settings = RedisSettings()
        settings.timeout = TIMEOUT
        settings.sentinels = tuple(s.address for s in cluster.sentinels)
        reload = subprocess.Popen([*admin, "DEBUG", "RELOAD"], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while "LOADING" not in master_reply(master):
                assert time.monotonic() < deadline and reload.poll() is None, "never saw LOADING"
            lookup = Lookup(settings)
            try:
                assert lookup.user_for(ADDRESS) == "alice"
                assert lookup._connection is not None
                assert lookup._connection.socket.getpeername()[1] != master.port
            finally:
                lookup.close()
            assert "LOADING" in master_reply(master)  # the master was loading all along
        finally:
            reload.wait(60)
    finally:
        cluster.stop()


def master_reply(master: Server) -> str:
    """What the master answers a GET now (LOADING while it reloads)."""
    result = subprocess.run(
        ["redis-cli", "-s", str(master.socket_path), "GET", keys.client_key(ADDRESS)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout + result.stderr


def test_lookup_is_unavailable_when_every_server_is_down(cluster: Cluster) -> None:
    for server in cluster.servers:
        server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        lookup_user(through_sentinels(cluster))
    assert time.monotonic() - started < TIMEOUT + 0.5  # within its timeout, give or take load


def test_a_replica_cut_off_from_its_master_keeps_answering(cluster: Cluster) -> None:
    """An SMTP host's local replica serves its data while no master is reachable
    (`replica-serve-stale-data yes`, Redis's default)."""
    master = cluster.master()
    for sentinel in cluster.sentinels:
        sentinel.stop()  # no failover either: the replica stays a replica without a master
    master.kill()
    replica = cluster.servers[1]
    time.sleep(0.3)
    assert replica.client().info("replication")["master_link_status"] == "down"
    settings = RedisSettings()
    parse_redis_url(f"unix://{replica.socket_path}", settings)
    assert cluster.acl is not None
    settings.username, settings.password = cluster.acl.login(acl.POLICY_USER)
    assert lookup_user(settings) == "alice"
    assert lookup_user(settings, "192.0.2.99") is None
