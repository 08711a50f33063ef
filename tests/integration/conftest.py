"""Fixtures of the integration tests: the handler under systemd-socket-activate, against
the test's redis-server; the store closed by ACL users (ours, or a handler-like one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from closedstore import ClosedStore
from support import AuditSink, RedisServer, free_port

from pbs_activated.store import acl


@pytest.fixture
def policy_service(
    tmp_path: Path, config_file: Path, audit_sink: AuditSink
) -> Iterator[PolicyService]:
    """Listening policy socket whose handlers use the test's Redis and audit sink."""
    with PolicyService(tmp_path, config_file, audit_sink.path) as service:
        yield service


@pytest.fixture
def closed_store(tmp_path: Path) -> Iterator[ClosedStore]:
    """A running redis-server closed by the ACL file `store-acl` wrote (test_store_acl.py)."""
    closed = ClosedStore(tmp_path)
    closed.server.start()
    yield closed
    closed.server.stop()


@pytest.fixture
def closed_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server whose one user has the handler's rights (and SELECT), password "secret",
    on its unix socket and a loopback port; `admin` (password "adminpw") may do anything."""
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(
        "user default off\n"
        f"user {acl.POLICY_USER} on >secret ~pbs:client:* +get +mget +ping +select\n"
        "user admin on >adminpw ~* +@all\n"
    )
    server = RedisServer(tmp_path, port=free_port(), arguments=("--aclfile", str(acl_file)))
    server.start()
    try:
        yield server
    finally:
        server.stop()
