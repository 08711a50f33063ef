"""Only Dovecot's own successful logins authorize: forged lines, failures, injected names don't.

Each test writes what an attacker on the host (or a client) can write, then waits
for `reader_caught_up` (a real login logged after it is authorized, so the reader
has seen the attacker's line too), then checks the address the attacker named.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from container import Container
from mailhost import USERS, dovecot_any_user_name, imap_login, login_verb, pop3_login, smtp_try
from product import (
    AddressPool,
    authorizations,
    login_line,
    reader_caught_up,
    wait_authorized,
)

pytestmark = pytest.mark.system

REMOTE = "someone@remote.test"
DOVECOT = "_SYSTEMD_UNIT=dovecot.service"


def assert_not_authorized(ct: Container, address: str) -> None:
    """Neither the store nor Postfix lets the address relay, and no login was audited."""
    assert address not in authorizations(ct)
    [(code, message)] = smtp_try(ct, address, [REMOTE])
    assert code == 554, message
    assert ct.journal("PBS_EVENT=login", f"PBS_CLIENT_ADDRESS={address}") == []


def forged_line(ct: Container, address: str, service: str = "pop3") -> str:
    """A login line for `address` worded as the installed Dovecot words its own."""
    return login_line(address, service=service, verb=login_verb(ct))


def wait_for_line(ct: Container, text: str, cursor: str) -> None:
    """The forged line did reach the journal: otherwise the test would prove nothing."""
    ct.wait_for_journal(contains=text, after_cursor=cursor)


# --------------------------------------------------------------------------
# Forged lines by local users and other services
# --------------------------------------------------------------------------


def test_logger_line_by_an_unprivileged_user_authorizes_nothing(
    product_host: Container, addresses: AddressPool
) -> None:
    target = addresses.v4()
    cursor = product_host.journal_cursor()
    product_host.run(
        ["logger", "-t", "dovecot", "-p", "mail.info", forged_line(product_host, target)],
        user="nobody",
    )
    wait_for_line(product_host, f"rip={target},", cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)


def test_systemd_cat_line_by_an_unprivileged_user_authorizes_nothing(
    product_host: Container, addresses: AddressPool
) -> None:
    target = addresses.v4()
    cursor = product_host.journal_cursor()
    product_host.run(
        ["systemd-cat", "-t", "dovecot"],
        input=forged_line(product_host, target, service="imap") + "\n",
        user="nobody",
    )
    wait_for_line(product_host, f"rip={target},", cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)


def test_native_entry_claiming_dovecots_unit_authorizes_nothing(
    product_host: Container, addresses: AddressPool
) -> None:
    """journald replaces the trusted `_` fields a client sends; `UNIT=` is not one."""
    target = addresses.v4()
    cursor = product_host.journal_cursor()
    fields = [
        f"MESSAGE={forged_line(product_host, target)}",
        "SYSLOG_IDENTIFIER=dovecot",
        "_SYSTEMD_UNIT=dovecot.service",
        "UNIT=dovecot.service",
        "OBJECT_SYSTEMD_UNIT=dovecot.service",
        "_COMM=log",
        "_TRANSPORT=syslog",
    ]
    product_host.run(["logger", "--journald"], input="\n".join(fields) + "\n", user="nobody")
    wait_for_line(product_host, f"rip={target},", cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)


@pytest.mark.smoke
@pytest.mark.parametrize("user", ["nobody", None], ids=["as-nobody", "as-root"])
def test_line_from_another_service_unit_authorizes_nothing(
    product_host: Container, addresses: AddressPool, user: str | None
) -> None:
    """Even root's line counts only from dovecot.service: the unit, not the name, is trusted."""
    target = addresses.v4()
    cursor = product_host.journal_cursor()
    product_host.log_from_unit(
        "pbs-forger", "dovecot", forged_line(product_host, target), user=user
    )
    wait_for_line(product_host, f"rip={target},", cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)


# --------------------------------------------------------------------------
# Dovecot's own lines that are not successful logins
# --------------------------------------------------------------------------


def test_wrong_password_authorizes_nothing(product_host: Container, addresses: AddressPool) -> None:
    pop_client, imap_client = addresses.v4(), addresses.v4()
    cursor = product_host.journal_cursor()
    assert not pop3_login(product_host, pop_client, "alice", "wrong")["ok"]
    assert not imap_login(product_host, imap_client, "bob", "wrong")["ok"]
    for client in (pop_client, imap_client):
        product_host.wait_for_journal(DOVECOT, contains=f"rip={client},", after_cursor=cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, pop_client)
    assert_not_authorized(product_host, imap_client)


def test_unknown_user_authorizes_nothing(product_host: Container, addresses: AddressPool) -> None:
    client = addresses.v4()
    cursor = product_host.journal_cursor()
    assert not pop3_login(product_host, client, "mallory", "secret")["ok"]
    product_host.wait_for_journal(DOVECOT, contains=f"rip={client},", after_cursor=cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, client)


def test_user_name_with_an_address_is_refused_by_dovecot_and_authorizes_nothing(
    product_host: Container, addresses: AddressPool
) -> None:
    """Debian's Dovecot refuses `,` and `=` in user names (auth_username_chars), but
    still logs the name the client sent: `user=<x, rip=TARGET>, ..., rip=CLIENT`."""
    client, target = addresses.v4(), addresses.v4()
    cursor = product_host.journal_cursor()
    assert not pop3_login(product_host, client, f"x, rip={target}", "secret")["ok"]
    product_host.wait_for_journal(DOVECOT, contains=f"user=<x, rip={target}>", after_cursor=cursor)
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)
    assert_not_authorized(product_host, client)


# --------------------------------------------------------------------------
# Successful logins with hostile user names (a Dovecot that allows any name)
# --------------------------------------------------------------------------

INJECTION_PASSWORD = "inject-pw"


def injected_names(target: str) -> list[str]:
    """User names that put `rip=target` into a login line. Lower case: Dovecot's
    auth_username_format (%Lu, 2.4's %{user | lower}) lowercases the name before
    the passwd-file lookup."""
    return [
        f"x, rip={target}",
        f"y>, method=plain, rip={target}, lip=192.0.2.1, mpid=1, session=<a>",
    ]


@pytest.fixture
def permissive_dovecot(product_host: Container, addresses: AddressPool) -> Iterator[str]:
    """Dovecot accepting injected user names (in its version's syntax); yields the
    address they name."""
    target = addresses.v4()
    with dovecot_any_user_name(product_host, injected_names(target), INJECTION_PASSWORD):
        yield target


@pytest.mark.parametrize("which", [0, 1], ids=["rip-after-comma", "whole-line-tail"])
def test_injected_user_name_authorizes_the_real_client_address_only(
    product_host: Container, addresses: AddressPool, permissive_dovecot: str, which: int
) -> None:
    """The login is genuine, so its real address may relay; the address in the name may not."""
    target = permissive_dovecot
    name = injected_names(target)[which]
    client = addresses.v4()
    cursor = product_host.journal_cursor()
    assert pop3_login(product_host, client, name, INJECTION_PASSWORD)["ok"]
    line = product_host.wait_for_journal(DOVECOT, contains=f"rip={client},", after_cursor=cursor)
    assert f"rip={target}" in line["MESSAGE"]  # the injection really is in the line
    assert wait_authorized(product_host, client) == name
    reader_caught_up(product_host, addresses.v4())
    assert_not_authorized(product_host, target)


def test_login_from_loopback_authorizes_nothing(
    product_host: Container, addresses: AddressPool
) -> None:
    """Webmail and local proxies log rip=127.0.0.1: that is every local user, not a client."""
    cursor = product_host.journal_cursor()
    assert pop3_login(product_host, "127.0.0.1", "alice", USERS["alice"])["ok"]
    product_host.wait_for_journal(DOVECOT, contains="rip=127.0.0.1,", after_cursor=cursor)
    reader_caught_up(product_host, addresses.v4())
    assert "127.0.0.1" not in authorizations(product_host)
    assert product_host.journal("PBS_EVENT=login", "PBS_CLIENT_ADDRESS=127.0.0.1") == []
