"""Inbound mail starts no policy handler under the recommended line (issue #22).

With `permit_auth_destination` before the policy check, Postfix accepts mail
for its own domains without asking us: the old line made every inbound RCPT
start (or wake) a handler, 0.8-0.9 ms of CPU per message. Here INBOUND messages
from a stranger to a local user, sent by Postfix's own load generator
(`smtp-source`, from the postfix package), must leave no trace in the product:

- behind pbs-policy.socket (a handler per connection) the socket's NAccepted
  does not move and no decision is audited;
- behind pbs-policy-server.socket (one server) the server is not started and no
  decision is audited;

and in the same test a POP3 login followed by a relay still gets 250.

smtp-source cannot bind a source address, so it connects to the server's own
address from inside the host, and the kernel makes that address the source
(SERVER_V4): not in mynetworks, never logged in, a stranger.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from container import Container
from mailhost import (
    SERVER_V4,
    USERS,
    SwaksSession,
    pop3_login,
    postfix_unit,
    swaks_at_once,
)
from product import AddressPool, authorizations, use_policy_socket, wait_authorized

pytestmark = pytest.mark.system

INBOUND = 50
"""Messages per socket."""
LOCAL_USER = "alice@example.test"
HANDLER_SOCKET = "pbs-policy.socket"
SERVER_SOCKET = "pbs-policy-server.socket"
SERVER = "pbs-policy-server.service"


@pytest.fixture(params=[HANDLER_SOCKET, SERVER_SOCKET])
def policy_socket(request: pytest.FixtureRequest, product_host: Container) -> Iterator[str]:
    """The product host serving Postfix from one socket; the package's default after."""
    chosen: str = request.param
    use_policy_socket(product_host, chosen)
    if chosen == SERVER_SOCKET:
        product_host.systemctl("stop", SERVER)  # so that a connection would show as a start
    try:
        yield chosen
    finally:
        use_policy_socket(product_host, HANDLER_SOCKET)


def show(ct: Container, unit: str, prop: str) -> str:
    return ct.systemctl("show", "-P", prop, unit).stdout.strip()


def decisions_since(ct: Container, cursor: str) -> list[dict[str, Any]]:
    """Every audited decision (PBS_ACTION) of a handler or the server since the cursor."""
    entries = ct.journal("SYSLOG_IDENTIFIER=pbs-activated", after_cursor=cursor)
    return [entry for entry in entries if "PBS_ACTION" in entry]


def wait_delivered(ct: Container, cursor: str, count: int, timeout: float = 60) -> int:
    """How many messages to LOCAL_USER the local agent delivered since the cursor, once
    there are `count` (the inbound mail really went through)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = ct.journal(f"_SYSTEMD_UNIT={postfix_unit(ct)}", after_cursor=cursor)
        delivered = sum(
            f"to=<{LOCAL_USER}>" in str(e.get("MESSAGE")) and "status=sent" in str(e.get("MESSAGE"))
            for e in entries
        )
        if delivered >= count or time.monotonic() > deadline:
            return delivered
        time.sleep(0.5)


def test_inbound_mail_reaches_no_policy_service_and_relaying_still_works(
    product_host: Container, policy_socket: str, addresses: AddressPool
) -> None:
    ct = product_host
    assert SERVER_V4 not in authorizations(ct)
    accepted = show(ct, HANDLER_SOCKET, "NAccepted")
    cursor = ct.journal_cursor()
    started = time.monotonic()
    ct.run(
        [
            "smtp-source",
            "-s",
            "5",
            "-m",
            str(INBOUND),
            "-f",
            "sender@client.example.test",
            "-t",
            LOCAL_USER,
            f"{SERVER_V4}:25",
        ],
        timeout=120,
    )
    sent_seconds = time.monotonic() - started
    assert wait_delivered(ct, cursor, INBOUND) >= INBOUND
    print(f"\n{INBOUND} inbound messages behind {policy_socket}: sent in {sent_seconds:.2f} s")

    assert decisions_since(ct, cursor) == []
    if policy_socket == HANDLER_SOCKET:
        assert show(ct, HANDLER_SOCKET, "NAccepted") == accepted
    else:
        assert show(ct, SERVER, "ActiveState") == "inactive"

    client = addresses.v4()
    assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
    wait_authorized(ct, client)
    [relay] = swaks_at_once(ct, [SwaksSession("relay", client, ("someone@remote.test",))])["relay"]
    assert relay.reply.startswith("250 "), relay
    assert [entry["PBS_ACTION"] for entry in decisions_since(ct, cursor)] == ["OK"]
    if policy_socket == HANDLER_SOCKET:
        assert int(show(ct, HANDLER_SOCKET, "NAccepted")) > int(accepted)
    else:
        assert show(ct, SERVER, "ActiveState") == "active"
