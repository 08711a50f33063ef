"""What an admin audits: journal entries with PBS_* fields, a quiet Postfix, a closed socket."""

from __future__ import annotations

import time

import pytest
from container import Container
from mailhost import USERS, pop3_login, postfix_unit, smtp_try
from product import (
    POLICY_SOCKET,
    AddressPool,
    decisions,
    wait_authorized,
    wait_for_entries,
)
from support import encode_request

pytestmark = pytest.mark.system

REMOTE = "someone@remote.test"
SENDER = "sender@client.example.test"


def test_journal_shows_the_login_taken_with_its_fields(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    cursor = product_host.journal_cursor()
    assert pop3_login(product_host, client, "alice", USERS["alice"])["ok"]
    [entry] = wait_for_entries(
        product_host, "PBS_EVENT=login", f"PBS_CLIENT_ADDRESS={client}", after_cursor=cursor
    )
    assert entry["PBS_USER"] == "alice"
    assert entry["PBS_SOURCE_UNIT"] == "dovecot.service"
    assert entry["_SYSTEMD_UNIT"] == "pbs-journal.service"
    assert entry["SYSLOG_IDENTIFIER"] == "pbs-activated"
    login_time = int(entry["PBS_LOGIN_TIME"])
    assert abs(login_time - time.time()) < 30
    assert int(entry["PBS_EXPIRES"]) == login_time + 1800  # the shipped lifetime
    assert client in entry["MESSAGE"] and "alice" in entry["MESSAGE"]


def test_journal_shows_an_accepted_relay_with_its_fields(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    assert pop3_login(product_host, client, "bob", USERS["bob"])["ok"]
    wait_authorized(product_host, client)
    cursor = product_host.journal_cursor()
    assert smtp_try(product_host, client, [REMOTE])[0][0] == 250
    [entry] = decisions(product_host, client, cursor)
    assert entry["PBS_ACTION"] == "OK"
    assert entry["PBS_USER"] == "bob"
    assert entry["PBS_RECIPIENT"] == REMOTE
    assert entry["PBS_SENDER"] == SENDER
    assert entry["PBS_PROTOCOL_STATE"] == "RCPT"
    assert entry["PBS_HELO_NAME"] == "client.example.test"
    assert entry["PBS_REASON"]
    assert entry["_SYSTEMD_UNIT"].startswith("pbs-policy@")
    # An auditor's query finds it by its fields alone.
    found = product_host.journal("PBS_ACTION=OK", "PBS_USER=bob", after_cursor=cursor)
    assert [e["PBS_RECIPIENT"] for e in found if e["PBS_CLIENT_ADDRESS"] == client] == [REMOTE]


def test_journal_shows_a_refused_relay_with_its_fields(
    product_host: Container, addresses: AddressPool
) -> None:
    client = addresses.v4()
    cursor = product_host.journal_cursor()
    assert smtp_try(product_host, client, [REMOTE])[0][0] == 554
    [entry] = decisions(product_host, client, cursor)
    assert entry["PBS_ACTION"] == "DUNNO"
    assert "PBS_USER" not in entry
    assert entry["PBS_RECIPIENT"] == REMOTE
    assert entry["PBS_SENDER"] == SENDER
    assert entry["PBS_REASON"]


@pytest.mark.parametrize("user", ["nobody", "alice"])
def test_an_unprivileged_user_cannot_connect_to_the_policy_socket(
    product_host: Container, user: str
) -> None:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect({POLICY_SOCKET!r})\n"
        "except PermissionError: print('denied')\n"
        "else: print('connected')\n"
    )
    result = product_host.run(["python3", "-c", probe], user=user)
    assert result.stdout.strip() == "denied"


def test_the_policy_socket_belongs_to_postfix_alone(product_host: Container) -> None:
    mode = product_host.run(["stat", "-c", "%A %U %G", POLICY_SOCKET]).stdout.split()
    assert mode == ["srw-------", "postfix", "postfix"]


@pytest.mark.after_all
def test_postfix_logged_no_policy_warning_during_the_whole_session(
    product_host: Container,
) -> None:
    """Runs last: every relay, outage and crash of the session has been through Postfix."""
    entries = product_host.journal("SYSLOG_IDENTIFIER=postfix/smtpd")
    assert entries, "no smtpd entries at all: the query is wrong"
    warnings = [e["MESSAGE"] for e in entries if "warning:" in e["MESSAGE"]]
    assert [w for w in warnings if "policy" in w or "pbs-policy" in w] == []
    policy = product_host.journal("-u", postfix_unit(product_host), "-p", "warning")
    assert [e["MESSAGE"] for e in policy if "policy" in e["MESSAGE"]] == []


LONG_ATTRIBUTE = 250 << 10
"""Bytes of one request attribute: within the handler's default line limit (256 KiB), and
enough to make the decision's entry larger than a default socket buffer (208 KiB)."""

POLICY_CLIENT = """
import socket, sys
connection = socket.socket(socket.AF_UNIX)
connection.connect(sys.argv[1])
connection.sendall(sys.stdin.buffer.read())
reply = b""
while not reply.endswith(b"\\n\\n"):
    chunk = connection.recv(4096)
    if not chunk:
        break
    reply += chunk
print(reply.decode().strip())
"""


def test_a_decision_with_an_attribute_of_250_kib_is_audited_whole(
    product_host: Container, addresses: AddressPool
) -> None:
    """From the handler in its sandboxed unit, as Postfix's connection would get it."""
    client = addresses.v4()
    sender = "s" * LONG_ATTRIBUTE + "@client.example.test"
    cursor = product_host.journal_cursor()
    request = encode_request(client_address=client, sender=sender)
    reply = product_host.run(["python3", "-c", POLICY_CLIENT, POLICY_SOCKET], input=request)
    assert reply.stdout.startswith("action="), reply.stdout
    # --all: journalctl shows a field past 4096 bytes as null without it.
    [entry] = wait_for_entries(
        product_host, "--all", f"PBS_CLIENT_ADDRESS={client}", after_cursor=cursor
    )
    assert entry["PBS_SENDER"] == sender
    assert entry["PBS_ACTION"] == "DUNNO"


AUDIT_SENDER = """
import sys
from pbs_activated import audit
audit.send(audit.INFO, "a big entry", PBS_TEST_MARK=sys.argv[1], PBS_BIG="x" * int(sys.argv[2]))
"""


@pytest.mark.parametrize("size", ["1 MiB", "past any datagram"])
def test_an_entry_too_big_for_a_datagram_lands_whole(product_host: Container, size: str) -> None:
    """Sent as nobody, as unprivileged as the units: journald takes the sealed memfd."""
    largest = 2 * int(product_host.read_file("/proc/sys/net/core/wmem_max"))
    length = 1 << 20 if size == "1 MiB" else largest + (1 << 20)
    mark = f"big-{time.monotonic_ns()}"
    cursor = product_host.journal_cursor()
    product_host.run(["python3", "-c", AUDIT_SENDER, mark, str(length)], user="nobody")
    [entry] = wait_for_entries(
        product_host, "--all", f"PBS_TEST_MARK={mark}", after_cursor=cursor, timeout=30
    )
    assert entry["PBS_BIG"] == "x" * length
    assert entry["SYSLOG_IDENTIFIER"] == "pbs-activated"
