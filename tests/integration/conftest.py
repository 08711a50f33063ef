"""Fixtures of the integration tests: the handler under systemd-socket-activate, against
the test's redis-server; the store closed by ACL users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from support import AuditSink
from test_store_acl import ClosedStore


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
