"""Fixtures shared by every test; the helpers behind them live in support.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AuditSink, RedisServer, write_config


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: run the tests through `make test`")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def config_file(tmp_path: Path, redis_server: RedisServer) -> Path:
    """A config file pointing at the test's redis-server, everything else default."""
    return write_config(tmp_path / "pbs-activated.toml", f'[redis]\nurl = "{redis_server.url}"\n')


@pytest.fixture
def audit_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditSink]:
    """Route audit entries of this process and its children to a sink the test reads."""
    sink = AuditSink(tmp_path / "journal.sock")
    monkeypatch.setenv("PBS_ACTIVATED_JOURNAL_SOCKET", str(sink.path))
    yield sink
    sink.close()
