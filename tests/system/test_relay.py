"""POP-before-SMTP as a mail client sees it: Postfix's answers before and after a login.

The product is the installed .deb on each target's real Postfix and Dovecot
(bookworm: 3.7 and 2.3, trixie: 3.10 and 2.4); the clients are smtplib, poplib
and imaplib from test addresses on the container's lo.
"""

from __future__ import annotations

import pytest
from container import Container
from mailhost import USERS, imap_login, pop3_login, smtp_session, smtp_try
from product import UNITS, AddressPool, decisions, wait_authorized

pytestmark = pytest.mark.system

REMOTE = "someone@remote.test"
LOCAL = "alice@example.test"
FIRST_RCPT_LIMIT = 1.0
"""Seconds the first RCPT may take: smtpd may connect to the policy socket, and
systemd then starts a handler (~0.1 s here)."""
NEXT_RCPT_LIMIT = 0.1
"""Seconds every further RCPT may take: the same handler answers on the same
connection (under 1 ms here), so this is ~100 times the usual answer."""


def test_installing_the_package_enables_and_starts_its_units(product_host: Container) -> None:
    for unit in UNITS:
        assert product_host.systemctl("is-enabled", unit).stdout.strip() == "enabled"
        assert product_host.systemctl("is-active", unit).stdout.strip() == "active"


@pytest.mark.smoke
def test_relaying_without_a_login_is_refused_permanently(
    product_host: Container, addresses: AddressPool
) -> None:
    [(code, message)] = smtp_try(product_host, addresses.v4(), [REMOTE])
    assert code == 554, message
    assert "Relay access denied" in message


def test_local_delivery_without_a_login_is_accepted(
    product_host: Container, addresses: AddressPool
) -> None:
    session = smtp_session(product_host, addresses.v4(), [LOCAL], send_data=True)
    assert session["rcpts"] == [[250, "2.1.5 Ok"]]
    assert session["data"][0] == 250, session


@pytest.mark.smoke
def test_pop3_login_authorizes_relaying_from_its_address(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    assert wait_authorized(product_host, client) == "alice"
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, message


@pytest.mark.smoke
def test_imap_login_authorizes_relaying_from_its_address(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    assert imap_login(product_host, client, "bob", USERS["bob"])["ok"]
    assert wait_authorized(product_host, client) == "bob"
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, message


@pytest.mark.smoke
def test_ipv6_login_authorizes_relaying_from_its_address(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v6()
    assert imap_login(product_host, client, "alice", USERS["alice"])["ok"]
    assert wait_authorized(product_host, client) == "alice"
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, message


@pytest.mark.smoke
def test_pop3_login_over_ipv6_authorizes_relaying_from_its_address(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v6()
    assert pop3_login(product_host, client, "bob", USERS["bob"])["ok"]
    assert wait_authorized(product_host, client) == "bob"
    [(code, message)] = smtp_try(product_host, client, [REMOTE])
    assert code == 250, message


def test_a_login_authorizes_only_its_own_address(
    product_host: Container, addresses: AddressPool
) -> None:
    client, neighbour = addresses.v4(), addresses.v4()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    wait_authorized(product_host, client)
    [(code, message)] = smtp_try(product_host, neighbour, [REMOTE])
    assert code == 554, message


def test_several_rcpts_are_answered_at_once_by_one_handler(
    product_host: Container, addresses: AddressPool
) -> None:
    """Postfix keeps its policy connection: one handler process answers the session."""
    client = addresses.v4()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    wait_authorized(product_host, client)
    cursor = product_host.journal_cursor()
    recipients = [f"user{n}@remote.test" for n in range(10)]
    session = smtp_session(product_host, client, recipients)
    assert [code for code, _ in session["rcpts"]] == [250] * len(recipients)
    first, *others = session["rcpt_seconds"]
    assert first < FIRST_RCPT_LIMIT, session["rcpt_seconds"]
    assert max(others) < NEXT_RCPT_LIMIT, session["rcpt_seconds"]
    answered = decisions(product_host, client, cursor, count=len(recipients))
    assert sorted(entry["PBS_RECIPIENT"] for entry in answered) == sorted(recipients)
    # The same question as an admin asks it: which handler instances logged?
    handler_entries = product_host.journal(
        "-u", "pbs-policy@*", f"PBS_CLIENT_ADDRESS={client}", after_cursor=cursor
    )
    assert {entry["_SYSTEMD_UNIT"] for entry in handler_entries} == {answered[0]["_SYSTEMD_UNIT"]}
    assert {entry["_PID"] for entry in answered} == {answered[0]["_PID"]}
