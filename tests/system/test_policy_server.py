"""One server process for all Postfix connections: pbs-policy-server.socket (Accept=no).

The administrator's switch for a busy site, made as pbs-activated(8) says, in the
shared product host; the module's fixture switches back to the package's default,
pbs-policy.socket, so the tests after it find the host as they expect it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from container import Container
from mailhost import (
    USERS,
    pop3_login,
    smtp_session,
    smtp_sessions_at_once,
    smtp_try,
    without_idle_smtpd,
)
from product import AddressPool, decisions, use_policy_socket, wait_active, wait_authorized

pytestmark = pytest.mark.system

SERVER_SOCKET = "pbs-policy-server.socket"
SERVER = "pbs-policy-server.service"
HANDLER_SOCKET = "pbs-policy.socket"
REMOTE = "someone@remote.test"


@pytest.fixture(scope="module")
def server_host(product_host: Container) -> Iterator[Container]:
    """The product host switched to the server socket, switched back afterwards."""
    use_policy_socket(product_host, SERVER_SOCKET)
    try:
        yield product_host
    finally:
        use_policy_socket(product_host, HANDLER_SOCKET)


def main_pid(ct: Container) -> int:
    """The server's process id, 0 while it is not running."""
    return int(ct.systemctl("show", "-P", "MainPID", SERVER).stdout)


def state(ct: Container, unit: str) -> str:
    return ct.systemctl("is-active", unit, check=False).stdout.strip()


def authorized_client(ct: Container, addresses: AddressPool) -> str:
    """A fresh address that has just logged in over POP3."""
    client = addresses.v4()
    assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
    assert wait_authorized(ct, client) == "alice"
    return client


def test_the_switch_leaves_only_the_server_socket_listening(server_host: Container) -> None:
    assert server_host.systemctl("is-enabled", SERVER_SOCKET).stdout.strip() == "enabled"
    assert state(server_host, SERVER_SOCKET) == "active"
    assert server_host.systemctl("is-enabled", HANDLER_SOCKET, check=False).stdout.strip() == (
        "disabled"
    )
    assert state(server_host, HANDLER_SOCKET) == "inactive"


def test_a_pop3_login_authorizes_relaying_through_the_server(
    server_host: Container, addresses: AddressPool
) -> None:
    client = authorized_client(server_host, addresses)
    cursor = server_host.journal_cursor()
    [(code, message)] = smtp_try(server_host, client, [REMOTE])
    assert code == 250, message
    [decision] = decisions(server_host, client, cursor)
    assert decision["PBS_ACTION"] == "OK"
    assert decision["PBS_USER"] == "alice"
    assert decision["PBS_RECIPIENT"] == REMOTE
    assert decision["_SYSTEMD_UNIT"] == SERVER


def test_relaying_without_a_login_is_refused_by_the_server(
    server_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    cursor = server_host.journal_cursor()
    [(code, message)] = smtp_try(server_host, client, [REMOTE])
    assert code == 554, message
    assert "Relay access denied" in message
    [decision] = decisions(server_host, client, cursor)
    assert decision["PBS_ACTION"] == "DUNNO"
    assert decision["PBS_REASON"] == "no recent login"
    assert decision["_SYSTEMD_UNIT"] == SERVER


def test_ten_rcpts_are_answered_by_one_server_process(
    server_host: Container, addresses: AddressPool
) -> None:
    client = authorized_client(server_host, addresses)
    cursor = server_host.journal_cursor()
    recipients = [f"user{n}@remote.test" for n in range(10)]
    session = smtp_session(server_host, client, recipients)
    assert [code for code, _ in session["rcpts"]] == [250] * len(recipients)
    server = main_pid(server_host)
    answered = decisions(server_host, client, cursor, count=len(recipients))
    assert sorted(entry["PBS_RECIPIENT"] for entry in answered) == sorted(recipients)
    assert {entry["_PID"] for entry in answered} == {str(server)}
    assert {entry["_SYSTEMD_UNIT"] for entry in answered} == {SERVER}


def test_two_smtp_sessions_at_once_share_the_server_process(
    server_host: Container, addresses: AddressPool
) -> None:
    """Two smtpd processes, two policy connections open together, one server answering."""
    authorized, stranger = authorized_client(server_host, addresses), addresses.v4()
    cursor = server_host.journal_cursor()
    recipients = [f"user{n}@remote.test" for n in range(3)]
    first, second = smtp_sessions_at_once(server_host, [authorized, stranger], recipients)
    assert [code for code, _ in first["rcpts"]] == [250] * len(recipients)
    assert [code for code, _ in second["rcpts"]] == [554] * len(recipients)
    server = str(main_pid(server_host))
    for client, action in ((authorized, "OK"), (stranger, "DUNNO")):
        answered = decisions(server_host, client, cursor, count=len(recipients))
        assert [entry["PBS_ACTION"] for entry in answered] == [action] * len(recipients)
        assert {entry["_PID"] for entry in answered} == {server}
    smtpd = {
        entry["_PID"]
        for entry in server_host.journal("SYSLOG_IDENTIFIER=postfix/smtpd", after_cursor=cursor)
        if entry["MESSAGE"].startswith("connect from")
    }
    assert len(smtpd) == 2, "the sessions were served by one smtpd, one after the other"


def test_a_stopped_server_is_started_again_by_the_next_connection(
    server_host: Container, addresses: AddressPool
) -> None:
    """Stopped while idle (as after idle_timeout), the socket keeps listening for it."""
    client = authorized_client(server_host, addresses)
    assert smtp_try(server_host, client, [REMOTE])[0][0] == 250  # the server is running
    before = main_pid(server_host)
    without_idle_smtpd(server_host)  # no Postfix connection left: idle
    server_host.systemctl("stop", SERVER)
    assert state(server_host, SERVER) == "inactive"
    assert state(server_host, SERVER_SOCKET) == "active"
    cursor = server_host.journal_cursor()
    [(code, message)] = smtp_try(server_host, client, [REMOTE])
    assert code == 250, message
    wait_active(server_host, SERVER)
    after = main_pid(server_host)
    assert after not in (0, before)
    [decision] = decisions(server_host, client, cursor)
    assert decision["_PID"] == str(after)
