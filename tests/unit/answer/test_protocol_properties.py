"""Properties of the parser over random bytes in random chunkings (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pbs_activated.answer import LimitExceeded, RequestParser
from pbs_activated.answer.decision import decide
from pbs_activated.config import PolicySettings

GRANTED = {"192.0.2.10": "alice"}

attribute_lines = st.sampled_from(
    [
        b"request=smtpd_access_policy\n",
        b"protocol_state=RCPT\n",
        b"protocol_state=DATA\n",
        b"client_address=192.0.2.10\n",
        b"client_address=192.0.2.11\n",
        b"client_address=::ffff:192.0.2.10\n",
        b"\n",
        b"\r\n",
        b"=\n",
        b"junk\n",
    ]
)
streams = st.lists(st.one_of(attribute_lines, st.binary(max_size=40)), max_size=40).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def parse_all(chunks: list[bytes]) -> tuple[list[dict[str, str]], bool]:
    parser = RequestParser(max_line_length=64, max_request_size=512)
    requests = []
    try:
        for chunk in chunks:
            requests += [(r.attributes, r.malformed) for r in parser.feed(chunk)]
    except LimitExceeded as error:
        requests += [(r.attributes, r.malformed) for r in error.complete]
        return requests, True
    return requests, False


@settings(max_examples=400)
@given(streams, st.lists(st.integers(min_value=0), max_size=30))
def test_chunking_never_changes_what_is_parsed(data: bytes, cuts: list[int]) -> None:
    assert parse_all(chunked(data, cuts)) == parse_all([data])


@settings(max_examples=400)
@given(streams, st.lists(st.integers(min_value=0), max_size=30))
def test_no_parsed_request_gets_ok_unless_it_is_a_clean_rcpt_from_a_granted_address(
    data: bytes, cuts: list[int]
) -> None:
    parser = RequestParser(max_line_length=64, max_request_size=512)
    try:
        requests = [r for chunk in chunked(data, cuts) for r in parser.feed(chunk)]
    except LimitExceeded as error:
        requests = error.complete
    for request in requests:
        decision = decide(request, PolicySettings(), GRANTED.get)
        if decision.action == "OK":
            assert not request.malformed
            assert request.get("request") == "smtpd_access_policy"
            assert request.get("protocol_state") == "RCPT"
            assert request.get("client_address") in ("192.0.2.10", "::ffff:192.0.2.10")
