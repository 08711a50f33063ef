"""answer.rcpt_client_address: the guess the handler asks Redis with before parsing.

The guess never decides anything (the store only answers a lookup from a
prefetched reply for the same key), so what matters is that it is right for
what Postfix sends, and that it never raises on anything else.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from support import encode_request

from pbs_activated.answer import RequestParser, rcpt_client_address

addresses = st.one_of(
    st.ip_addresses().map(str),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        max_size=30,
    ),
)


@settings(max_examples=300)
@given(addresses)
def test_the_guess_is_the_parsed_address_of_a_postfix_rcpt_request(address: str) -> None:
    chunk = encode_request(protocol_state="RCPT", client_address=address)
    (request,) = RequestParser(4096, 65536).feed(chunk)
    assert rcpt_client_address(chunk) == request.get("client_address")


def test_no_guess_outside_rcpt_or_before_the_request_ends() -> None:
    assert rcpt_client_address(encode_request(protocol_state="MAIL")) is None
    assert rcpt_client_address(encode_request()[:-1]) is None
    assert rcpt_client_address(b"request=smtpd_access_policy\nprotocol_state=RCPT\n\n") is None


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_guess_or_none_and_never_raise(data: bytes) -> None:
    guess = rcpt_client_address(data)
    assert guess is None or "\n" not in guess
