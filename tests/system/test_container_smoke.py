"""Smoke test of the system-test harness: the container is a working mail host.

If this fails, product system tests would fail for reasons unrelated to
pbs-activated; it checks exactly the facts they rely on.
"""

from __future__ import annotations

import pytest
from container import Container
from mailhost import CLIENTS_V4, CLIENTS_V6, imap_login, pop3_login, smtp_try

pytestmark = pytest.mark.system


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


def test_dovecot_login_is_in_journal_with_unit(mail_host: Container) -> None:
    pop3_login(mail_host, CLIENTS_V4[0], "alice", "secret")
    entries = mail_host.journal("_SYSTEMD_UNIT=dovecot.service", "--since", "-5min")
    logins = [e for e in entries if "pop3-login: Login: user=<alice>" in str(e.get("MESSAGE"))]
    assert logins, [e.get("MESSAGE") for e in entries]
    assert "rip=192.0.2.10" in str(logins[-1]["MESSAGE"])
    # Dovecot logs through its "log" process: _COMM is "log", not "pop3-login".
    assert logins[-1]["_COMM"] == "log"


def test_redis_answers(mail_host: Container) -> None:
    out = mail_host.run(["redis-cli", "ping"]).stdout
    assert out.strip() == "PONG"
