"""`pbs-activated doctor` on a booted Debian 12 and 13: all ok when correct, one finding per fault.

Each fault is what an administrator really does (the policy line after
reject_unauth_destination, a `permit` before it, a typo in the socket path, the
socket disabled, the reader stopped, a customised Dovecot login format, a store
of their own without a password, the store stopped); each must give its own
finding, and the exit status of the monitoring-plugin convention. Every test
puts the host back as it found it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from container import Container
from mailhost import (
    DOVECOT_SNIPPET,
    dovecot_version,
    enable_policy_service,
    pop3_login,
    reconfigure_dovecot,
)
from product import CONFIG, AddressPool, wait_active, write_config

from pbs_activated.admin import postfix

pytestmark = [pytest.mark.system, pytest.mark.deliberate_faults]

CUSTOM_FORMAT = {
    "2.3": "login_log_format_elements = user=<%u> rip=%r lip=%l\n",
    "2.4": "login_log_format_elements = user=<%{user}> rip=%{remote_ip} lip=%{local_ip}\n",
}
"""A site's own login line: the elements without `method=`, which our parser expects."""
SITE_PATTERN = (
    r"(?P<protocol>pop3|imap)-login: (?:Login|Logged in): "
    r"user=<(?P<user>[^<>]+)>, rip=(?P<address>[0-9a-f.:]+), lip=[0-9a-f.:]+"
)
"""The `[journal] pattern` that takes CUSTOM_FORMAT's lines (Dovecot 2.3 and 2.4)."""


LAST_FINDINGS: list[dict[str, Any]] = []
"""Every finding of the last doctor run, shown when an assertion about it fails."""


def doctor(ct: Container, user: str | None = None) -> tuple[int, dict[str, str]]:
    """Run doctor --json; (exit status, {check: status}) with every finding kept in .findings."""
    result = ct.run(["pbs-activated", "doctor", "--json"], check=False, user=user, timeout=120)
    if result.returncode == 77:
        return 77, {}
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["status"] == result.returncode
    statuses: dict[str, str] = {}
    for finding in report["findings"]:
        # The worst status of a check that several smtpd services report.
        order = ["ok", "warning", "unknown", "error"]
        current = statuses.get(finding["check"], "ok")
        statuses[finding["check"]] = max(current, finding["status"], key=order.index)
    LAST_FINDINGS[:] = report["findings"]
    return result.returncode, statuses


def not_ok(statuses: dict[str, str]) -> dict[str, str]:
    return {check: status for check, status in statuses.items() if status != "ok"}


@contextlib.contextmanager
def relay_restrictions(ct: Container, value: str) -> Iterator[None]:
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={value}"])
    try:
        yield
    finally:
        enable_policy_service(ct)


def test_a_correct_installation_is_all_ok(product_host: Container, addresses: AddressPool) -> None:
    assert pop3_login(product_host, addresses.v4(), "alice", "secret")["ok"]
    status, statuses = doctor(product_host)
    assert not_ok(statuses) == {}, LAST_FINDINGS
    assert status == 0
    for check in (
        "postfix.line",
        "systemd.socket",
        "systemd.reader",
        "logs.format",
        "journald.rate-limit",
        "store.reachable",
        "store.open",
        "time.sync",
    ):
        assert check in statuses


def test_a_user_who_cannot_read_the_journal_gets_77(product_host: Container) -> None:
    assert doctor(product_host, user="nobody")[0] == 77


def test_the_policy_line_after_reject_unauth_destination(product_host: Container) -> None:
    line = f"permit_mynetworks, reject_unauth_destination, {postfix.restriction()}"
    with relay_restrictions(product_host, line):
        status, statuses = doctor(product_host)
    assert (not_ok(statuses), status) == ({"postfix.position": "error"}, 2), LAST_FINDINGS


def test_a_permit_before_the_policy_line(product_host: Container) -> None:
    line = postfix.relay_restrictions().replace("permit_mynetworks,", "permit_mynetworks, permit,")
    with relay_restrictions(product_host, line):
        status, statuses = doctor(product_host)
    assert (not_ok(statuses), status) == ({"postfix.open-relay": "error"}, 2), LAST_FINDINGS


def test_a_wrong_socket_path(product_host: Container) -> None:
    with relay_restrictions(product_host, postfix.relay_restrictions("unix:private/pbs-polcy")):
        status, statuses = doctor(product_host)
    assert (not_ok(statuses), status) == ({"postfix.socket": "error"}, 2), LAST_FINDINGS


def test_the_policy_settings_missing(product_host: Container) -> None:
    line = (
        "permit_mynetworks, check_policy_service unix:private/pbs-policy, reject_unauth_destination"
    )
    with relay_restrictions(product_host, line):
        status, statuses = doctor(product_host)
    # 0.2.0's place for it, too: no permit_auth_destination, no policy_context
    expected = {"postfix.settings": "warning", "postfix.legacy": "warning"}
    assert (not_ok(statuses), status) == (expected, 1), LAST_FINDINGS


def test_the_socket_disabled(product_host: Container) -> None:
    product_host.systemctl("disable", "--now", "pbs-policy.socket")
    try:
        status, statuses = doctor(product_host)
    finally:
        product_host.systemctl("enable", "--now", "pbs-policy.socket")
    # Postfix names a socket nothing listens on any more: both say so.
    expected = {"systemd.socket": "error", "postfix.socket": "error"}
    assert (not_ok(statuses), status) == (expected, 2), LAST_FINDINGS


def test_the_reader_stopped(product_host: Container) -> None:
    product_host.systemctl("stop", "pbs-journal.service")
    try:
        status, statuses = doctor(product_host)
    finally:
        product_host.systemctl("start", "pbs-journal.service")
        wait_active(product_host, "pbs-journal.service")
    assert (not_ok(statuses), status) == ({"systemd.reader": "error"}, 2), LAST_FINDINGS


@contextlib.contextmanager
def custom_login_format(ct: Container) -> Iterator[None]:
    """Dovecot writes its login lines in CUSTOM_FORMAT until the block ends."""
    snippet = ct.read_file(DOVECOT_SNIPPET)
    ct.write_file(DOVECOT_SNIPPET, snippet + CUSTOM_FORMAT[dovecot_version(ct)])
    try:
        reconfigure_dovecot(ct)
        yield
    finally:
        ct.write_file(DOVECOT_SNIPPET, snippet)
        reconfigure_dovecot(ct)


def format_finding() -> dict[str, str]:
    """The logs.format finding of the last doctor run."""
    [finding] = [f for f in LAST_FINDINGS if f["check"] == "logs.format"]
    return finding


def assert_unread_session_named(ct: Container, source: str, user: str, password: str) -> None:
    """`user` logs in under CUSTOM_FORMAT: doctor must name that session in a logs.format
    error, no login line having been taken since (warnings are for older sessions)."""
    with custom_login_format(ct):
        assert pop3_login(ct, source, user, password)["ok"]
        status, statuses = doctor(ct)
    assert (not_ok(statuses), status) == ({"logs.format": "error"}, 2), LAST_FINDINGS
    finding = format_finding()
    assert user in finding["message"] and "Logged out" in finding["message"]


def test_login_lines_no_parser_takes(product_host: Container, addresses: AddressPool) -> None:
    ct = product_host
    if ct.run(["id", "dora"], check=False).returncode != 0:
        ct.run(["useradd", "--create-home", "dora"])
    ct.run(["chpasswd"], input="dora:dora-secret\n")
    assert_unread_session_named(ct, addresses.v4(), "dora", "dora-secret")


def test_a_format_changed_after_a_users_earlier_login(
    product_host: Container, addresses: AddressPool
) -> None:
    """Issue #24: alice's login in the old format, taken the same day, must not hide her
    session after the change; the site pattern the fix names then takes her new line."""
    ct = product_host
    assert pop3_login(ct, addresses.v4(), "alice", "secret")["ok"]
    assert_unread_session_named(ct, addresses.v4(), "alice", "secret")
    # The same journal read with a pattern for the new line: its login names neither
    # session nor process, and is matched to alice's session by time.
    original = ct.read_file(CONFIG)
    assert "\n[journal]\n" in original
    write_config(
        ct, original.replace("\n[journal]\n", f"\n[journal]\npattern = '{SITE_PATTERN}'\n")
    )
    try:
        status, statuses = doctor(ct)
    finally:
        write_config(ct, original)
    assert statuses["logs.format"] == "ok", format_finding()


def test_an_open_store(product_host: Container) -> None:
    original = product_host.read_file(CONFIG)
    write_config(product_host, '[redis]\nurl = "redis://127.0.0.1:6379"\n')
    try:
        status, statuses = doctor(product_host)
    finally:
        write_config(product_host, original)
    assert statuses["store.open"] == "error" and status == 2
    assert "systemd.store" not in statuses  # not the package's store: its unit is not asked


def test_a_stopped_store(product_host: Container) -> None:
    product_host.systemctl("stop", "pbs-store.service")
    try:
        status, statuses = doctor(product_host)
    finally:
        product_host.systemctl("start", "pbs-store.service")
        wait_active(product_host, "pbs-store.service")
    assert statuses["store.reachable"] == "error" and statuses["systemd.store"] == "error"
    assert status == 2
