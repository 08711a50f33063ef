"""Courier and Cyrus in a booted Debian: a real login relays, a forged one authorizes nothing.

Each test runs once per Courier or Cyrus target (`server_target`: bookworm+courier,
trixie+courier, bookworm+cyrus, trixie+cyrus), on serverhost.py's host with the
.deb installed and `[journal] servers` naming the target's server, the one
setting the README tells such a site to make. Every test is smoke: these
targets run nothing else (test_relay.py and the rest are Dovecot's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from container import COURIER, CYRUS, Container, Target
from mailhost import imap_login, pop3_login, smtp_try
from product import (
    CONFIG,
    AddressPool,
    authorizations,
    install_product,
    reader_caught_up,
    wait_authorized,
    write_config,
)
from serverhost import UNITS, configure_server_host

pytestmark = [pytest.mark.system, pytest.mark.smoke]

REMOTE = "someone@remote.test"
IDENTIFIERS = {COURIER.name: ("pop3d", "imapd-ssl"), CYRUS.name: ("cyrus/pop3", "cyrus/imaps")}
"""SYSLOG_IDENTIFIERs the real daemons log under (the recordings show them)."""


def login_line(server: str, address: str, user: str = "alice") -> str:
    """A successful login line for `address`, word for word as the server writes its own."""
    if server == COURIER.name:
        return f"LOGIN, user={user}, ip=[::ffff:{address}], port=[40000]"
    return f"login: [{address}] {user} plaintext User logged in SESSIONID=<cyrus-1-2-3-4>"


@pytest.fixture(scope="session")
def server_host(deb: Path, server_target: Target) -> Iterator[Container]:
    """The target's mail host with the .deb installed and its server named in the conffile."""
    with Container(server_target) as ct:
        configure_server_host(ct)
        install_product(ct, deb)
        shipped = ct.read_file(CONFIG)
        write_config(ct, f'[journal]\nservers = ["{server_target.server.name}"]\n')
        yield ct
        ct.write_file(CONFIG, shipped)


@pytest.fixture(scope="session")
def pool(server_target: Target) -> AddressPool:
    """Client addresses, each handed out once per target."""
    return AddressPool()


def assert_relays(ct: Container, address: str, user: str) -> None:
    assert wait_authorized(ct, address) == user
    [(code, message)] = smtp_try(ct, address, [REMOTE])
    assert code == 250, message


def assert_not_authorized(ct: Container, address: str) -> None:
    assert address not in authorizations(ct)
    [(code, message)] = smtp_try(ct, address, [REMOTE])
    assert code == 554, message
    assert ct.journal("PBS_EVENT=login", f"PBS_CLIENT_ADDRESS={address}") == []


# --------------------------------------------------------------------------
# Real logins relay
# --------------------------------------------------------------------------


def test_without_a_login_relaying_is_refused(server_host: Container, pool: AddressPool) -> None:
    assert_not_authorized(server_host, pool.v4())


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_a_pop3_login_relays_from_its_address(
    server_host: Container, pool: AddressPool, tls: str
) -> None:
    client = pool.v4()
    assert pop3_login(server_host, client, "alice", "secret", tls)["ok"]
    assert_relays(server_host, client, "alice")


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_an_imap_login_relays_from_its_address(
    server_host: Container, pool: AddressPool, tls: str
) -> None:
    client = pool.v4()
    assert imap_login(server_host, client, "bob", "bob-secret", tls)["ok"]
    assert_relays(server_host, client, "bob")


def test_an_ipv6_login_relays_from_its_address(server_host: Container, pool: AddressPool) -> None:
    client = pool.v6()
    assert imap_login(server_host, client, "alice", "secret", "implicit")["ok"]
    assert_relays(server_host, client, "alice")


def test_the_login_comes_from_the_servers_own_unit(
    server_host: Container, pool: AddressPool, server_target: Target
) -> None:
    client = pool.v4()
    assert pop3_login(server_host, client, "alice", "secret", "implicit")["ok"]
    wait_authorized(server_host, client)
    [entry] = server_host.journal("PBS_EVENT=login", f"PBS_CLIENT_ADDRESS={client}")
    assert entry["PBS_SOURCE_UNIT"] in UNITS[server_target.server.name]


# --------------------------------------------------------------------------
# Nothing else does
# --------------------------------------------------------------------------


def test_a_wrong_password_authorizes_nothing(server_host: Container, pool: AddressPool) -> None:
    client = pool.v4()
    assert not pop3_login(server_host, client, "alice", "wrong")["ok"]
    reader_caught_up(server_host, pool.v4())
    assert_not_authorized(server_host, client)


def test_logger_lines_by_an_unprivileged_user_authorize_nothing(
    server_host: Container, pool: AddressPool, server_target: Target
) -> None:
    server = server_target.server.name
    forged = [pool.v4() for _ in IDENTIFIERS[server]]
    for identifier, address in zip(IDENTIFIERS[server], forged, strict=True):
        line = login_line(server, address)
        server_host.run(["logger", "-t", identifier, "-p", "mail.info", line], user="nobody")
    reader_caught_up(server_host, pool.v4())
    for address in forged:
        assert_not_authorized(server_host, address)


def test_systemd_cat_lines_by_an_unprivileged_user_authorize_nothing(
    server_host: Container, pool: AddressPool, server_target: Target
) -> None:
    server = server_target.server.name
    address = pool.v4()
    server_host.run(
        ["systemd-cat", "-t", IDENTIFIERS[server][0], "-p", "info"],
        input=login_line(server, address) + "\n",
        user="nobody",
    )
    reader_caught_up(server_host, pool.v4())
    assert_not_authorized(server_host, address)


def test_a_line_from_another_unit_authorizes_nothing(
    server_host: Container, pool: AddressPool, server_target: Target
) -> None:
    server = server_target.server.name
    address = pool.v4()
    line = login_line(server, address)
    server_host.log_from_unit("pbs-forger.service", IDENTIFIERS[server][0], line, user="nobody")
    reader_caught_up(server_host, pool.v4())
    assert_not_authorized(server_host, address)


def test_a_hostile_reverse_dns_name_authorizes_only_the_real_address(
    server_host: Container, pool: AddressPool, server_target: Target
) -> None:
    """Cyrus writes the client's reverse-DNS name before its address; Courier does not
    look it up (Debian's -nodnslookup), and writes the address alone."""
    client, claimed = pool.v4(), pool.v4()
    hosts = server_host.read_file("/etc/hosts")
    server_host.write_file("/etc/hosts", hosts + f"{client}\tevil[{claimed}]\n")
    try:
        assert pop3_login(server_host, client, "alice", "secret")["ok"]
        assert_relays(server_host, client, "alice")
    finally:
        server_host.write_file("/etc/hosts", hosts)
    assert_not_authorized(server_host, claimed)
