"""Failures around the product: the reader killed, Redis gone, time passing.

A login must never be lost to a crash or an outage, an outage must cost relaying
clients a temporary error only (never local mail), and an authorization must end
when its lifetime is over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from container import Container
from mailhost import USERS, pop3_login, smtp_try, store_unit
from product import (
    CONFIG,
    AddressPool,
    authorizations,
    decisions,
    reader_caught_up,
    wait_active,
    wait_authorized,
    write_config,
)

pytestmark = pytest.mark.system

REMOTE = "someone@remote.test"
LOCAL = "bob@example.test"
READER = "pbs-journal.service"


def restarts(ct: Container) -> int:
    return int(ct.systemctl("show", "-P", "NRestarts", READER).stdout)


def kill_reader(ct: Container) -> None:
    """SIGKILL the reader, as the OOM killer or a crash would: no cleanup, no cursor save.

    `--kill-who=main`: the reader is one process, and in this container (systemd
    252 on the host's hybrid cgroup v1 layout) the unit-wide kill reports EIO for
    the cgroup walk after the main process was killed, though no process is left.
    """
    ct.systemctl("kill", "--kill-who=main", "-s", "KILL", READER)


def test_login_while_the_reader_is_killed_counts_after_its_restart(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    before = restarts(product_host)
    kill_reader(product_host)
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    assert wait_authorized(product_host, client) == "alice"
    wait_active(product_host, READER)
    assert restarts(product_host) == before + 1
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, message


def test_reader_killed_right_after_a_login_still_counts_it(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    before = restarts(product_host)
    cursor = product_host.journal_cursor()
    assert pop3_login(product_host, client, "bob", USERS["bob"])["ok"]
    product_host.wait_for_journal(
        "_SYSTEMD_UNIT=dovecot.service", contains=f"rip={client},", after_cursor=cursor
    )
    kill_reader(product_host)
    assert wait_authorized(product_host, client) == "bob"
    wait_active(product_host, READER)
    assert restarts(product_host) == before + 1


def test_restarting_the_reader_brings_back_no_revoked_authorization(
    product_host: Container, addresses: AddressPool
) -> None:
    """The reader resumes after its saved cursor: it does not replay old logins."""
    client = addresses.v4()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    wait_authorized(product_host, client)
    product_host.run(["pbs-activated", "revoke", client])
    product_host.systemctl("restart", READER)
    wait_active(product_host, READER)
    reader_caught_up(product_host, addresses.v4())
    assert client not in authorizations(product_host)
    assert len(product_host.journal("PBS_EVENT=login", f"PBS_CLIENT_ADDRESS={client}")) == 1


@pytest.fixture
def redis_restored(product_host: Container) -> Iterator[None]:
    """Debian's redis-server (or valkey-server) runs again after the test, whatever it did."""
    try:
        yield
    finally:
        product_host.systemctl("start", store_unit(product_host))


@pytest.mark.smoke
def test_redis_outage_defers_relaying_keeps_local_mail_and_loses_no_login(
    product_host: Container, addresses: AddressPool, redis_restored: None
) -> None:
    authorized, during_outage = addresses.v4(), addresses.v4()
    assert pop3_login(product_host, authorized, "alice", USERS["alice"])["ok"]
    wait_authorized(product_host, authorized)
    product_host.systemctl("stop", store_unit(product_host))

    cursor = product_host.journal_cursor()
    [relay, local] = smtp_try(product_host, authorized, [REMOTE, LOCAL])
    assert relay[0] == 450 and relay[1].startswith("4.7.1 "), relay
    assert local[0] == 250, local
    # Local mail never asks the policy service (permit_auth_destination, issue #22).
    [deferred] = decisions(product_host, authorized, cursor, count=1)
    assert deferred["PBS_ACTION"] == "DEFER_IF_REJECT", deferred
    assert deferred["PBS_RECIPIENT"] == REMOTE
    assert pop3_login(product_host, during_outage, "bob", USERS["bob"])["ok"]
    time.sleep(1)  # the reader meets the outage and starts retrying

    product_host.systemctl("start", store_unit(product_host))
    assert wait_authorized(product_host, during_outage) == "bob"
    [(code, message)] = smtp_try(product_host, during_outage, [REMOTE])
    assert code == 250, message


SHORT_LIFETIME = 5


@pytest.fixture
def short_lifetime(product_host: Container) -> Iterator[int]:
    """`[authorization] lifetime` of a few seconds for the reader; the conffile restored after."""
    shipped = product_host.read_file(CONFIG)
    write_config(product_host, f"[authorization]\nlifetime = {SHORT_LIFETIME}\n")
    try:
        yield SHORT_LIFETIME
    finally:
        write_config(product_host, shipped)


def test_authorization_ends_lifetime_seconds_after_the_login(
    product_host: Container, addresses: AddressPool, short_lifetime: int
) -> None:
    client = addresses.v4()
    cursor = product_host.journal_cursor()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    login = product_host.wait_for_journal(
        "_SYSTEMD_UNIT=dovecot.service", contains=f"rip={client},", after_cursor=cursor
    )
    logged_in = int(login["__REALTIME_TIMESTAMP"]) / 1e6
    wait_authorized(product_host, client)
    assert authorizations(product_host)[client][1] <= short_lifetime

    sleep_until(logged_in + short_lifetime - 2)
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, f"expired early: {message}"
    sleep_until(logged_in + short_lifetime + 0.5)
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 554, f"still authorized after the lifetime: {message}"
    assert client not in authorizations(product_host)


def sleep_until(wall_clock: float) -> None:
    """Sleep until a time.time() instant (the container shares the host's clock)."""
    time.sleep(max(0.0, wall_clock - time.time()))
