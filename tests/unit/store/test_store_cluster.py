"""The pure parts of the store's cluster support: Sentinel replies, ROLE, replica counts."""

from __future__ import annotations

import pytest

from pbs_activated.store import (
    ReplicationUnconfirmed,
    StoreUnavailable,
    replication,
    resp,
    sentinel,
)


def replica(ip: bytes, port: bytes, flags: bytes) -> list[bytes]:
    """One entry of `SENTINEL replicas`, as the sentinel sends it (a flat name/value list)."""
    return [
        b"name",
        ip + b":" + port,
        b"ip",
        ip,
        b"port",
        port,
        b"runid",
        b"abc",
        b"flags",
        flags,
        b"master-link-status",
        b"ok",
    ]


def test_the_master_comes_first_then_the_replicas() -> None:
    servers = sentinel.servers(
        [b"10.0.0.1", b"6379"],
        [replica(b"10.0.0.2", b"6379", b"slave"), replica(b"10.0.0.3", b"6380", b"slave")],
    )
    assert servers == [("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6380)]


@pytest.mark.parametrize("flags", [b"s_down,slave", b"slave,o_down", b"slave,disconnected"])
def test_replicas_seen_down_are_left_out(flags: bytes) -> None:
    servers = sentinel.servers([b"10.0.0.1", b"6379"], [replica(b"10.0.0.2", b"6379", flags)])
    assert servers == [("10.0.0.1", 6379)]


def test_a_replica_that_lost_its_master_is_kept() -> None:
    entry = replica(b"10.0.0.2", b"6379", b"slave")
    entry[-1] = b"err"  # master-link-status: it still serves its data
    assert sentinel.servers(None, [entry]) == [("10.0.0.2", 6379)]


def test_an_unknown_master_leaves_only_the_replicas() -> None:
    assert sentinel.servers(None, []) == []


def test_the_master_listed_again_as_a_replica_is_tried_once() -> None:
    servers = sentinel.servers([b"10.0.0.1", b"6379"], [replica(b"10.0.0.1", b"6379", b"slave")])
    assert servers == [("10.0.0.1", 6379)]


def test_a_garbled_address_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailable):
        sentinel.servers([b"10.0.0.1", b"port"], [])


def test_a_masters_role_counts_its_online_replicas() -> None:
    role = ["master", 3129, [["10.0.0.2", "6379", "3129"], ["10.0.0.3", "6379", "3100"]]]
    assert replication.replicas_online(role) == 2
    assert replication.replicas_online(["master", 0, []]) == 0


def test_a_replicas_role_counts_none() -> None:
    assert replication.replicas_online(["slave", "10.0.0.1", 6379, "connected", 3129]) == 0


def test_auto_asks_one_confirmation_when_any_replica_is_online() -> None:
    auto = replication.Replication()
    assert [auto.required(online) for online in (0, 1, 2, 5)] == [0, 1, 1, 1]


def test_a_configured_count_is_asked_whatever_is_online() -> None:
    assert [replication.Replication(2).required(online) for online in (0, 1, 3)] == [2, 2, 2]
    assert replication.Replication(0).required(3) == 0


def test_unconfirmed_replication_is_a_store_failure() -> None:
    """Callers that handle StoreUnavailable (the CLI) report it; the reader re-sends."""
    assert issubclass(ReplicationUnconfirmed, StoreUnavailable)


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    assert resp.encode_command(("SENTINEL", "get-master-addr-by-name", "pbs")) == (
        b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$3\r\npbs\r\n"
    )
    assert (
        resp.encode_command(("AUTH", "pässword"))
        == b"*2\r\n$4\r\nAUTH\r\n$9\r\np\xc3\xa4ssword\r\n"
    )
