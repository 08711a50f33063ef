"""The policy protocol parser: requests out of arbitrary chunks, within named limits."""

import pytest

from pbs_activated.answer import LimitExceeded, RequestParser, format_reply, parse_request

REQUEST = b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\n\n"


def parser(max_line_length: int = 4096, max_request_size: int = 65536) -> RequestParser:
    return RequestParser(max_line_length, max_request_size)


def test_a_complete_request_is_returned_with_its_attributes() -> None:
    [request] = parser().feed(REQUEST)
    assert request.attributes == {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.10",
    }
    assert not request.malformed


def test_a_request_split_byte_by_byte_is_returned_once_complete() -> None:
    stream = parser()
    results = [stream.feed(REQUEST[i : i + 1]) for i in range(len(REQUEST))]
    assert all(result == [] for result in results[:-1])
    assert results[-1][0].get("client_address") == "192.0.2.10"


def test_two_requests_in_one_read_are_both_returned_in_order() -> None:
    second = REQUEST.replace(b"192.0.2.10", b"192.0.2.11")
    requests = parser().feed(REQUEST + second)
    assert [r.get("client_address") for r in requests] == ["192.0.2.10", "192.0.2.11"]


def test_a_request_and_a_half_keeps_the_half_for_the_next_read() -> None:
    stream = parser()
    assert len(stream.feed(REQUEST + REQUEST[:20])) == 1
    assert stream.in_request
    assert len(stream.feed(REQUEST[20:])) == 1
    assert not stream.in_request


def test_crlf_line_ends_are_accepted() -> None:
    [request] = parser().feed(REQUEST.replace(b"\n", b"\r\n"))
    assert request.get("protocol_state") == "RCPT"


def test_extra_empty_lines_between_requests_are_ignored() -> None:
    assert len(parser().feed(b"\n\n" + REQUEST + b"\n")) == 1


def test_values_may_contain_equals_signs() -> None:
    [request] = parser().feed(b"request=smtpd_access_policy\nsender=a=b@example.test\n\n")
    assert request.get("sender") == "a=b@example.test"


def test_non_utf8_bytes_are_replaced_not_refused() -> None:
    [request] = parser().feed(b"request=smtpd_access_policy\nhelo_name=\xff\xfe\n\n")
    assert request.get("helo_name") == "\ufffd\ufffd"
    assert not request.malformed


def test_unknown_attributes_are_kept_and_harmless() -> None:
    [request] = parser().feed(b"request=smtpd_access_policy\nfuture_attribute=x\n\n")
    assert request.get("future_attribute") == "x"
    assert not request.malformed


def test_a_line_without_equals_marks_the_request_malformed() -> None:
    [request] = parser().feed(b"request=smtpd_access_policy\ngarbage\n\n")
    assert request.malformed


def test_an_attribute_given_twice_marks_the_request_malformed() -> None:
    data = b"request=smtpd_access_policy\nclient_address=192.0.2.1\nclient_address=192.0.2.2\n\n"
    [request] = parser().feed(data)
    assert "twice" in request.malformed


def test_a_line_over_the_limit_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="line longer than 100"):
        parser(max_line_length=100).feed(b"sender=" + b"x" * 100 + b"\n")


def test_an_unterminated_line_over_the_limit_is_refused_before_its_end() -> None:
    stream = parser(max_line_length=100)
    with pytest.raises(LimitExceeded):
        for _ in range(20):
            stream.feed(b"x" * 10)


def test_a_request_over_the_size_limit_is_refused() -> None:
    stream = parser(max_line_length=100, max_request_size=1000)
    with pytest.raises(LimitExceeded, match="request larger than 1000"):
        for number in range(100):
            stream.feed(b"name%d=%s\n" % (number, b"v" * 50))


def test_the_size_limit_counts_each_request_afresh() -> None:
    stream = parser(max_line_length=100, max_request_size=200)
    for _ in range(50):
        assert len(stream.feed(REQUEST)) == 1


def test_parse_request_strips_a_carriage_return() -> None:
    assert parse_request([b"protocol_state=RCPT\r"]).get("protocol_state") == "RCPT"


def test_a_reply_is_the_action_and_an_empty_line() -> None:
    assert format_reply("DUNNO") == b"action=DUNNO\n\n"
    assert format_reply("DEFER_IF_REJECT 4.7.1 later") == b"action=DEFER_IF_REJECT 4.7.1 later\n\n"
