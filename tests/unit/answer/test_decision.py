"""What the handler answers: OK only for a well-formed RCPT request from a granted address."""

import pytest

from pbs_activated.answer import Request
from pbs_activated.answer.decision import decide
from pbs_activated.config import PolicySettings
from pbs_activated.store import StoreUnavailable

GRANTED = {"192.0.2.10": "alice", "2001:db8::10": "bob"}


def user_for(address: str) -> str | None:
    return GRANTED.get(address)


def unavailable(address: str) -> str | None:
    raise StoreUnavailable("Redis did not answer in time")


def rcpt(**attributes: str) -> Request:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.10",
    }
    return Request(dict(base, **attributes))


POLICY = PolicySettings()


def test_a_granted_address_at_rcpt_gets_ok_with_its_user() -> None:
    decision = decide(rcpt(), POLICY, user_for)
    assert (decision.action, decision.user, decision.client_address) == (
        "OK",
        "alice",
        "192.0.2.10",
    )


def test_an_unknown_address_at_rcpt_gets_dunno() -> None:
    assert decide(rcpt(client_address="192.0.2.99"), POLICY, user_for).action == "DUNNO"


@pytest.mark.parametrize(
    "state", ["CONNECT", "EHLO", "HELO", "MAIL", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN", ""]
)
def test_every_other_state_gets_dunno_even_for_a_granted_address(state: str) -> None:
    assert decide(rcpt(protocol_state=state), POLICY, user_for).action == "DUNNO"


def test_the_state_is_matched_without_regard_to_case() -> None:
    assert decide(rcpt(protocol_state="rcpt"), POLICY, user_for).action == "OK"


def test_ipv6_and_ipv4_mapped_addresses_are_looked_up_in_normal_form() -> None:
    assert decide(rcpt(client_address="2001:DB8:0::10"), POLICY, user_for).user == "bob"
    assert decide(rcpt(client_address="::ffff:192.0.2.10"), POLICY, user_for).user == "alice"


@pytest.mark.parametrize(
    "address", ["", "unknown", "192.0.2.300", "224.0.0.1", "::", "192.0.2.10/32"]
)
def test_an_invalid_or_missing_address_never_gets_ok(address: str) -> None:
    assert decide(rcpt(client_address=address), POLICY, user_for).action == "DUNNO"


def test_a_request_without_client_address_gets_dunno() -> None:
    request = Request({"request": "smtpd_access_policy", "protocol_state": "RCPT"})
    assert decide(request, POLICY, user_for).action == "DUNNO"


def test_a_malformed_request_never_gets_ok() -> None:
    request = Request(rcpt().attributes, malformed="line without name=value")
    assert decide(request, POLICY, user_for).action == "DUNNO"


def test_a_request_of_another_kind_never_gets_ok() -> None:
    assert decide(rcpt(request="junk"), POLICY, user_for).action == "DUNNO"
    assert (
        decide(
            Request({"protocol_state": "RCPT", "client_address": "192.0.2.10"}), POLICY, user_for
        ).action
        == "DUNNO"
    )


def test_an_unavailable_store_gets_the_unavailable_answer() -> None:
    decision = decide(rcpt(), POLICY, unavailable)
    assert decision.action.startswith("DEFER_IF_REJECT ")
    assert "did not answer" in decision.reason


def test_an_unavailable_store_does_not_matter_outside_rcpt() -> None:
    assert decide(rcpt(protocol_state="CONNECT"), POLICY, unavailable).action == "DUNNO"


def test_the_three_answers_are_configurable() -> None:
    policy = PolicySettings()
    policy.authorized = "PREPEND X-PBS: yes"
    policy.unauthorized = "REJECT relay needs a login"
    policy.unavailable = "450 4.7.1 later"
    assert decide(rcpt(), policy, user_for).action == "PREPEND X-PBS: yes"
    assert (
        decide(rcpt(client_address="192.0.2.99"), policy, user_for).action
        == "REJECT relay needs a login"
    )
    assert decide(rcpt(), policy, unavailable).action == "450 4.7.1 later"
