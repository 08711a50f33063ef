"""The handler under systemd-socket-activate, against the test's redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from support import AuditSink


@pytest.fixture
def policy_service(
    tmp_path: Path, config_file: Path, audit_sink: AuditSink
) -> Iterator[PolicyService]:
    """Listening policy socket whose handlers use the test's Redis and audit sink."""
    with PolicyService(tmp_path, config_file, audit_sink.path) as service:
        yield service
