"""The two forms of the Postfix line (postfix.py): 0.3's asks about relaying only, 0.2's kept."""

from __future__ import annotations

from pbs_activated.admin import postfix
from pbs_activated.admin.doctor.postconf import restrictions
from pbs_activated.answer.decision import RELAY_CONTEXT


def names(line: str) -> list[str]:
    return [item.name for item in restrictions(line)]


def test_permit_auth_destination_comes_directly_before_our_check() -> None:
    listed = names(postfix.relay_restrictions())
    assert listed.index("permit_auth_destination") + 1 == listed.index("check_policy_service")


def test_the_line_ends_in_reject_unauth_destination_not_reject() -> None:
    assert names(postfix.relay_restrictions())[-1] == "reject_unauth_destination"


def test_the_line_marks_itself_with_the_relay_context() -> None:
    ours = restrictions(postfix.relay_restrictions())[3]
    assert ("policy_context", RELAY_CONTEXT) in ours.options


def test_the_old_line_is_0_2s() -> None:
    assert postfix.legacy_relay_restrictions() == (
        "permit_mynetworks, permit_sasl_authenticated, check_policy_service"
        " { unix:private/pbs-policy, default_action=DEFER_IF_REJECT, timeout=10s, max_idle=60s },"
        " reject_unauth_destination"
    )


def test_main_cf_folds_the_same_line() -> None:
    assert " ".join(postfix.main_cf().split()) == (
        "smtpd_relay_restrictions = " + postfix.relay_restrictions()
    )
