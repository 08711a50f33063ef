"""decision.lookup_address: the policy server fetches, before deciding a round, exactly
the address that `decide` will look up, so that no request costs a lookup of its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pbs_activated.answer import Request, parse_request
from pbs_activated.answer.decision import decide, lookup_address
from pbs_activated.config import PolicySettings
from pbs_activated.store import StoreUnavailable

POLICY = PolicySettings()

client_addresses = st.one_of(
    st.sampled_from(
        [
            "192.0.2.10",
            " 192.0.2.10 ",
            "::ffff:192.0.2.10",
            "[2001:db8::1]",
            "2001:DB8:0::1",
            "::1",
            "127.0.0.1",
            "",
            "unknown",
            "192.0.2.300",
            "192.0.2.10/32",
            "224.0.0.1",
            "0.0.0.0",
            "::",
            "ff02::1",
            "fe80::1%eth0",
        ]
    ),
    st.ip_addresses().map(str),
    st.text(max_size=40),
)
states = st.one_of(
    st.sampled_from(["RCPT", "rcpt", "Rcpt", "RCPT ", "DATA", "CONNECT", ""]), st.text(max_size=8)
)
kinds = st.sampled_from(["smtpd_access_policy", "SMTPD_ACCESS_POLICY", "junk", ""])


@st.composite
def built_requests(draw: st.DrawFn) -> Request:
    """Requests as any caller may build them: each attribute there or not, any malformation."""
    attributes = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8)))
    for name, values in (
        ("request", kinds),
        ("protocol_state", states),
        ("client_address", client_addresses),
    ):
        if draw(st.integers(min_value=0, max_value=5)):  # mostly present
            attributes[name] = draw(values)
    malformed = draw(st.sampled_from(["", "line without name=value: 'junk'"]))
    return Request(attributes, malformed)


request_lines = st.one_of(
    st.sampled_from(
        [
            b"request=smtpd_access_policy",
            b"protocol_state=RCPT",
            b"protocol_state=DATA",
            b"client_address=192.0.2.10",
            b"client_address=::ffff:192.0.2.10",
            b"client_address=2001:db8::10\r",
            b"client_address=192.0.2.10",  # twice: malformed
            b"junk",
            b"=",
        ]
    ),
    st.binary(max_size=30).filter(lambda line: b"\n" not in line),
)
parsed_requests = st.lists(request_lines, min_size=1, max_size=8).map(parse_request)
"""Requests as the server gets them, from the parser."""


@settings(max_examples=500)
@given(st.one_of(built_requests(), parsed_requests), st.sampled_from(["alice", None, "down"]))
def test_lookup_address_is_the_address_decide_looks_up_or_none(
    request: Request, store: str | None
) -> None:
    asked: list[str] = []

    def user_for(address: str) -> str | None:
        asked.append(address)
        if store == "down":
            raise StoreUnavailable("Redis did not answer in time")
        return store

    decide(request, POLICY, user_for)
    assert len(asked) <= 1
    assert lookup_address(request) == (asked[0] if asked else None)


@given(st.one_of(built_requests(), parsed_requests))
def test_a_request_without_a_lookup_address_never_gets_ok(request: Request) -> None:
    if lookup_address(request) is None:
        assert decide(request, POLICY, lambda address: "alice").action != "OK"
