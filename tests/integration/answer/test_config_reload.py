"""A config edit reaches every open Postfix connection before its next answer.

Postfix keeps a policy connection for up to smtpd_policy_service_max_ttl
(1000 s): a handler (or the Accept=no server) that kept the file it started
with would answer from a broken file long after it was mended. Each test edits
the file while a connection stays open, with no restart and no reload.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService, ServerService
from support import AuditSink, RedisServer, run_cli, write_config

from pbs_activated.config import defaults

UNAVAILABLE = defaults.ACTION_UNAVAILABLE


@pytest.fixture(params=["handler", "server"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, config_file: Path, audit_sink: AuditSink
) -> Iterator[PolicyService | ServerService]:
    """The Accept=yes handler and the Accept=no server, each on the test's config file."""
    kind = PolicyService if request.param == "handler" else ServerService
    with kind(tmp_path, config_file, audit_sink.path) as running:
        yield running


def rewrite(path: Path, text: str) -> None:
    """Replace the file as an editor does: a new file renamed over the old one."""
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_a_broken_then_mended_file_is_followed_on_the_same_connection(
    service: PolicyService | ServerService, config_file: Path, redis_server: RedisServer
) -> None:
    run_cli("grant", "192.0.2.10", config=config_file)
    good = config_file.read_text()
    client = service.connect()
    assert client.ask() == "OK"
    rewrite(config_file, good + "[policy]\nauthorised = 'typo'\n")
    assert client.ask() == UNAVAILABLE  # broken: never OK, never a refusal
    assert client.ask(client_address="192.0.2.99") == UNAVAILABLE
    rewrite(config_file, good)
    assert client.ask() == "OK"  # mended: the store again, on the same connection


def test_an_edited_answer_applies_to_the_next_request(
    service: PolicyService | ServerService, config_file: Path
) -> None:
    client = service.connect()
    assert client.ask(client_address="192.0.2.99") == "DUNNO"
    text = config_file.read_text() + '[policy]\nunauthorized = "REJECT 5.7.1 no"\n'
    write_config(config_file, text)  # in place, as `cat >` would
    assert client.ask(client_address="192.0.2.99") == "REJECT 5.7.1 no"


def test_a_move_to_another_store_is_followed(
    service: PolicyService | ServerService, config_file: Path, tmp_path: Path
) -> None:
    other = RedisServer(tmp_path / "other")
    (tmp_path / "other").mkdir()
    other.start()
    try:
        other.command("SET", "pbs:client:192.0.2.20", "bob")
        client = service.connect()
        assert client.ask(client_address="192.0.2.20") == "DUNNO"
        rewrite(config_file, f'[redis]\nurl = "{other.url}"\n')
        assert client.ask(client_address="192.0.2.20") == "OK"
    finally:
        other.stop()


def test_a_removed_file_means_the_defaults(
    service: PolicyService | ServerService, config_file: Path
) -> None:
    """No file is every default, here the package's own store, which this host lacks."""
    run_cli("grant", "192.0.2.10", config=config_file)
    client = service.connect()
    assert client.ask() == "OK"
    config_file.unlink()
    assert client.ask() == UNAVAILABLE
