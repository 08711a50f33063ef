"""Smoke test of the system-test harness: the container is a working mail host.

If this fails, product system tests would fail for reasons unrelated to
pbs-activated; it checks exactly the facts they rely on.  Tests leave the
shared session container as they found it.
"""

from __future__ import annotations

import pytest
from container import Container
from mailhost import (
    CLIENTS_V4,
    CLIENTS_V6,
    disable_policy_service,
    enable_policy_service,
    imap_login,
    login_verb,
    pop3_login,
    postfix_unit,
    smtp_try,
    store_unit,
)

from pbs_activated.admin import postfix

pytestmark = pytest.mark.system

DOVECOT = "_SYSTEMD_UNIT=dovecot.service"


def test_systemd_is_pid1_and_booted(mail_host: Container) -> None:
    assert mail_host.run(["ps", "-o", "comm=", "-p", "1"]).stdout.strip() == "systemd"
    state = mail_host.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded")
    for unit in (postfix_unit(mail_host), "dovecot.service", store_unit(mail_host)):
        assert mail_host.systemctl("is-active", unit, check=False).stdout.strip() == "active"


def test_pop3_login_ipv4(mail_host: Container) -> None:
    result = pop3_login(mail_host, CLIENTS_V4[0], "alice", "secret")
    assert result["ok"], result


def test_imap_login_ipv6(mail_host: Container) -> None:
    result = imap_login(mail_host, CLIENTS_V6[0], "alice", "secret")
    assert result["ok"], result


def test_wrong_password_is_refused(mail_host: Container) -> None:
    result = pop3_login(mail_host, CLIENTS_V4[2], "bob", "wrong")
    assert not result["ok"], result


def test_relay_refused_without_authorisation(mail_host: Container) -> None:
    [(code, message)] = smtp_try(mail_host, CLIENTS_V4[1], ["someone@remote.test"])
    assert code == 554, message
    assert "Relay access denied" in message


def test_local_delivery_accepted(mail_host: Container) -> None:
    [(code, message)] = smtp_try(mail_host, CLIENTS_V4[1], ["alice@example.test"])
    assert code == 250, message


def test_dovecot_login_is_in_journal_with_trusted_fields(mail_host: Container) -> None:
    cursor = mail_host.journal_cursor()
    assert pop3_login(mail_host, CLIENTS_V4[0], "alice", "secret")["ok"]
    entry = mail_host.wait_for_journal(
        DOVECOT,
        contains=f"pop3-login: {login_verb(mail_host)}: user=<alice>",
        after_cursor=cursor,
    )
    assert "rip=192.0.2.10, lip=192.0.2.1," in entry["MESSAGE"]
    # Dovecot logs through its "log" process: _COMM is "log", not "pop3-login".
    assert entry["_COMM"] == "log"
    assert entry["_EXE"] == "/usr/lib/dovecot/log"
    assert entry["_UID"] == "0"
    assert entry["SYSLOG_IDENTIFIER"] == "dovecot"


def test_ipv6_login_is_in_journal(mail_host: Container) -> None:
    cursor = mail_host.journal_cursor()
    assert imap_login(mail_host, CLIENTS_V6[1], "bob", "bob-secret")["ok"]
    entry = mail_host.wait_for_journal(
        DOVECOT,
        contains=f"imap-login: {login_verb(mail_host)}: user=<bob>",
        after_cursor=cursor,
    )
    assert "rip=2001:db8::11, lip=2001:db8::1," in entry["MESSAGE"]


def test_policy_service_helper_changes_relay_answer(mail_host: Container) -> None:
    """With the policy service configured but not yet running, Postfix defers the relay
    (450, from default_action=DEFER_IF_REJECT: not 451 for every recipient) and local
    mail still arrives."""
    enable_policy_service(mail_host)
    try:
        restrictions = mail_host.run(["postconf", "-h", "smtpd_relay_restrictions"]).stdout
        assert f"{postfix.restriction()}, reject_unauth_destination" in restrictions
        [(code, message)] = smtp_try(mail_host, CLIENTS_V4[1], ["someone@remote.test"])
        assert code == 450, message
        [(code, message)] = smtp_try(mail_host, CLIENTS_V4[1], ["alice@example.test"])
        assert code == 250, message
    finally:
        disable_policy_service(mail_host)
    [(code, message)] = smtp_try(mail_host, CLIENTS_V4[1], ["someone@remote.test"])
    assert code == 554, message


def test_store_answers_on_its_own_cli(mail_host: Container) -> None:
    """redis-cli on Redis, valkey-cli on Valkey (trixie's Valkey has no redis-cli)."""
    out = mail_host.run([mail_host.target.store.cli, "ping"]).stdout
    assert out.strip() == "PONG"


def test_run_as_user_and_files(mail_host: Container) -> None:
    assert mail_host.run(["id", "-un"], user="alice").stdout.strip() == "alice"
    mail_host.write_file("/tmp/pbs-smoke/file.txt", "hello\n", mode=0o600)
    assert mail_host.read_file("/tmp/pbs-smoke/file.txt") == "hello\n"
    assert mail_host.run(["stat", "-c", "%a", "/tmp/pbs-smoke/file.txt"]).stdout.strip() == "600"
    mail_host.run(["rm", "-r", "/tmp/pbs-smoke"])


def test_log_from_unit_has_trusted_fields(mail_host: Container) -> None:
    """A forged "dovecot" line from another unit is distinguishable by _SYSTEMD_UNIT."""
    cursor = mail_host.journal_cursor()
    mail_host.log_from_unit("pbs-smoke-forger", "dovecot", "pop3-login: Login: forged", user="bob")
    entry = mail_host.wait_for_journal(
        "SYSLOG_IDENTIFIER=dovecot", contains="forged", after_cursor=cursor
    )
    assert entry["_SYSTEMD_UNIT"] == "pbs-smoke-forger.service"
    assert entry["_UID"] == mail_host.run(["id", "-u", "bob"]).stdout.strip()
    assert entry["_COMM"] == "python3"
