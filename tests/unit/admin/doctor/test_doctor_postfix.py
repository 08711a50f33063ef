"""doctor on the Postfix line of 0.3 (issue #22): old and new forms, and where not to advise it."""

from __future__ import annotations

from pbs_activated.admin import postfix
from pbs_activated.admin.doctor import postfix as doctor_postfix
from pbs_activated.admin.doctor.findings import OK, WARNING

SOCKET = "/var/spool/postfix/private/pbs-policy"
POLICY = postfix.restriction()
LEGACY_POLICY = postfix.restriction(options=postfix.LEGACY_OPTIONS)


def judged(relay: str, recipient: str = "") -> set[tuple[str, str]]:
    findings = doctor_postfix.analyse(
        "main.cf", relay, recipient, "/var/spool/postfix", True, {SOCKET}
    )
    return {(finding.check, finding.status) for finding in findings}


def test_the_new_line_is_ok() -> None:
    assert judged(postfix.relay_restrictions()) == {("postfix.line", OK)}


def test_the_line_of_0_2_is_a_warning_that_names_the_change() -> None:
    findings = doctor_postfix.analyse(
        "main.cf", postfix.legacy_relay_restrictions(), "", "/var/spool/postfix", True, {SOCKET}
    )
    assert [(f.check, f.status) for f in findings] == [("postfix.legacy", WARNING)]
    assert "inbound RCPT" in findings[0].message
    assert postfix.LOCAL_DESTINATIONS in findings[0].fix
    assert POLICY in findings[0].fix


def test_the_context_without_permit_auth_destination_warns_that_inbound_mail_waits() -> None:
    relay = f"permit_mynetworks, permit_sasl_authenticated, {POLICY}, reject_unauth_destination"
    findings = doctor_postfix.analyse("main.cf", relay, "", "/var/spool/postfix", True, {SOCKET})
    assert [(f.check, f.status) for f in findings] == [("postfix.legacy", WARNING)]
    assert "waits" in findings[0].message


def test_permit_auth_destination_without_the_context_is_a_warning() -> None:
    relay = (
        "permit_mynetworks, permit_sasl_authenticated, permit_auth_destination,"
        f" {LEGACY_POLICY}, reject_unauth_destination"
    )
    assert judged(relay) == {("postfix.legacy", WARNING)}


def test_site_restrictions_between_the_permit_and_our_check_are_a_warning() -> None:
    relay = (
        "permit_mynetworks, permit_sasl_authenticated, permit_auth_destination,"
        f" reject_rbl_client zen.example, {POLICY}, reject_unauth_destination"
    )
    assert judged(relay) == {("postfix.position", WARNING)}


def test_site_restrictions_before_the_permit_are_fine() -> None:
    relay = (
        "permit_mynetworks, permit_sasl_authenticated, check_client_access hash:/etc/postfix/x,"
        f" permit_auth_destination, {POLICY}, reject_unauth_destination"
    )
    assert judged(relay) == {("postfix.line", OK)}


def test_a_submission_list_ending_in_reject_needs_no_policy_service() -> None:
    assert judged("permit_sasl_authenticated, reject") == {("postfix.line", OK)}


def test_debians_submission_overrides_need_no_policy_service() -> None:
    """master.cf's submission: `-o smtpd_relay_restrictions=` (empty) and
    `-o smtpd_recipient_restrictions=permit_sasl_authenticated,reject`."""
    assert judged("", "permit_sasl_authenticated, reject") == {("postfix.line", OK)}


def test_permit_auth_destination_in_a_list_ending_in_reject_is_a_warning() -> None:
    relay = f"permit_sasl_authenticated, permit_auth_destination, {POLICY}, reject"
    assert ("postfix.submission", WARNING) in judged(relay)


def test_our_service_in_recipient_restrictions_is_a_warning() -> None:
    recipient = f"permit_mynetworks, {POLICY}, reject_unauth_destination"
    assert judged("permit_mynetworks, permit_sasl_authenticated", recipient) == {
        ("postfix.recipient", WARNING)
    }
