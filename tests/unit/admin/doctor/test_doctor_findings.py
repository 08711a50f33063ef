"""doctor's pure parts: Postfix's restriction lists judged, the exit codes."""

from __future__ import annotations

from pbs_activated.admin import postfix
from pbs_activated.admin.doctor import examine
from pbs_activated.admin.doctor import postfix as doctor_postfix
from pbs_activated.admin.doctor.findings import ERROR, OK, UNKNOWN, WARNING, Finding

SOCKET = "/var/spool/postfix/private/pbs-policy"


def judged(
    relay: str, recipient: str = "", listening: set[str] | None = None
) -> set[tuple[str, str]]:
    findings = doctor_postfix.analyse(
        "main.cf", relay, recipient, "/var/spool/postfix", True, listening or {SOCKET}
    )
    return {(finding.check, finding.status) for finding in findings}


def test_the_recommended_line_is_ok() -> None:
    assert judged(postfix.relay_restrictions()) == {("postfix.line", OK)}


def test_the_line_after_the_refusal_is_an_error() -> None:
    relay = f"permit_mynetworks, reject_unauth_destination, {postfix.restriction()}"
    assert judged(relay) == {("postfix.position", ERROR)}


def test_a_bare_permit_before_the_refusal_is_an_open_relay() -> None:
    relay = f"permit, {postfix.restriction()}, reject_unauth_destination"
    assert ("postfix.open-relay", ERROR) in judged(relay)


def test_a_socket_no_unit_listens_on_is_an_error() -> None:
    relay = postfix.relay_restrictions("unix:private/pbs-nowhere")
    assert judged(relay) == {("postfix.socket", ERROR)}


def test_an_absolute_path_in_a_chroot_is_under_the_queue_directory() -> None:
    assert (
        doctor_postfix.socket_path("unix:/private/pbs-policy", "/var/spool/postfix", True) == SOCKET
    )
    assert doctor_postfix.socket_path(f"unix:{SOCKET}", "/var/spool/postfix", False) == SOCKET


def test_the_line_in_recipient_restrictions_behind_debians_default_is_useless() -> None:
    relay = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
    recipient = f"{postfix.restriction()}, reject_unauth_destination"
    assert judged(relay, recipient) == {("postfix.useless", ERROR)}


def test_missing_line_and_missing_settings() -> None:
    assert judged("permit_mynetworks, reject_unauth_destination") == {("postfix.missing", ERROR)}
    plain = (
        "permit_mynetworks, check_policy_service unix:private/pbs-policy, reject_unauth_destination"
    )
    assert judged(plain) == {("postfix.settings", WARNING), ("postfix.legacy", WARNING)}


def test_restriction_lists_split_as_postfix_splits_them() -> None:
    parsed = doctor_postfix.restrictions(postfix.relay_restrictions())
    assert [item.name for item in parsed] == [
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "permit_auth_destination",
        "check_policy_service",
        "reject_unauth_destination",
    ]
    assert parsed[3].service == postfix.POLICY_SERVICE
    assert parsed[3].options == postfix.POLICY_OPTIONS


def test_the_exit_status_is_the_monitoring_plugins_convention() -> None:
    def status(*statuses: str) -> int:
        return examine.exit_status([Finding("x", s, "") for s in statuses])

    assert status(OK, OK) == 0
    assert status(OK, WARNING) == 1
    assert status(WARNING, ERROR, UNKNOWN) == 2
    assert status(WARNING, UNKNOWN) == 3
