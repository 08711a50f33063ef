"""The handler's RESP2 codec (resp.Parser) and the typed errors it leads to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbs_activated.store import (
    ServerNotReady,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    error_reply,
    failure,
    resp,
)
from pbs_activated.store.resp import Parser, ProtocolError, ReplyError

REPLIES: list[tuple[bytes, object]] = [
    (b"$5\r\nalice\r\n", b"alice"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"+OK\r\n", b"OK"),
    (b":42\r\n", 42),
    (b":-3\r\n", -3),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n$5\r\nalice\r\n$-1\r\n$3\r\nbob\r\n", [b"alice", None, b"bob"]),
    (b"*2\r\n*1\r\n:1\r\n*0\r\n", [[1], []]),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string may hold CRLF
]


def replies_of(stream: bytes, pieces: list[int]) -> list[object]:
    """Feed `stream` cut at `pieces`, taking every reply as soon as it is whole."""
    parser = Parser()
    found: list[object] = []
    start = 0
    for end in [*sorted(pieces), len(stream)]:
        parser.feed(stream[start:end])
        start = end
        while (value := parser.gets()) is not False:
            found.append(value)
    return found


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_each_reply_fed_whole(wire: bytes, value: object) -> None:
    assert replies_of(wire, []) == [value]


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_each_reply_fed_byte_by_byte(wire: bytes, value: object) -> None:
    parser = Parser()
    for index, byte in enumerate(wire):
        assert parser.gets() is False, f"a reply after {index} bytes"
        parser.feed(bytes([byte]))
    assert parser.gets() == value
    assert parser.gets() is False
    assert not parser.has_data()


def test_every_reply_of_a_stream_fed_byte_by_byte() -> None:
    stream = b"".join(wire for wire, _ in REPLIES)
    assert replies_of(stream, list(range(1, len(stream)))) == [value for _, value in REPLIES]


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=20))
def test_any_cut_of_a_stream_gives_the_same_replies(cuts: list[int]) -> None:
    stream = b"".join(wire for wire, _ in REPLIES)
    pieces = [cut % (len(stream) + 1) for cut in cuts]
    assert replies_of(stream, pieces) == [value for _, value in REPLIES]


def test_an_error_reply_is_a_value_at_top_level() -> None:
    [value] = replies_of(b"-LOADING Redis is loading the dataset in memory\r\n", [])
    assert isinstance(value, ReplyError)
    assert str(value) == "LOADING Redis is loading the dataset in memory"


def test_error_replies_inside_an_array_are_values_among_others() -> None:
    # What a transaction's EXEC returns when one of its commands failed.
    wire = b"*3\r\n+OK\r\n-WRONGTYPE Operation against a key\r\n:1\r\n"
    for pieces in ([], list(range(1, len(wire)))):
        [value] = replies_of(wire, pieces)
        assert isinstance(value, list)
        assert value[0] == b"OK"
        assert isinstance(value[1], ReplyError)
        assert str(value[1]) == "WRONGTYPE Operation against a key"
        assert value[2] == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"?what\r\n",
        b"$abc\r\n",
        b":1.5\r\n",
        b"*x\r\n",
        b"$3\r\nabcde\r\n",
        b": 5\r\n",  # int() would take these four
        b":1_0\r\n",
        b"$ 1\r\nx\r\n",
        b"*+1\r\n:1\r\n",
        b":\r\n",
    ],
)
def test_what_is_not_resp_is_a_protocol_error(wire: bytes) -> None:
    parser = Parser()
    parser.feed(wire)
    with pytest.raises(ProtocolError):
        parser.gets()


def test_a_protocol_error_is_transient_for_the_caller() -> None:
    # The connection is dropped and another one tried: nothing about it is permanent.
    assert issubclass(ProtocolError, StoreUnavailable)


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert resp.encode_command(("GET", "pbs:client:192.0.2.1")) == (
        b"*2\r\n$3\r\nGET\r\n$20\r\npbs:client:192.0.2.1\r\n"
    )
    assert (
        resp.encode_command(("AUTH", "pässword"))
        == b"*2\r\n$4\r\nAUTH\r\n$9\r\np\xc3\xa4ssword\r\n"
    )


# Typed errors: what each error reply means for the caller.


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("LOADING Redis is loading the dataset in memory", ServerNotReady),
        ("READONLY You can't write against a read only replica.", ServerNotReady),
        (
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            ServerNotReady,
        ),
        ("MOVED 3999 127.0.0.1:6381", ServerNotReady),
        ("BUSY Redis is busy running a script.", ServerNotReady),
        ("NOAUTH Authentication required.", StoreRefused),
        ("WRONGPASS invalid username-password pair or user is disabled.", StoreRefused),
        ("NOPERM User pbs-policy has no permissions to run the 'set' command", StoreRefused),
        ("ERR unknown command 'PEXPIRETIME'", StoreRefused),
        ("ERR Error running script", StoreRefused),
    ],
)
def test_each_error_code_has_its_type(text: str, kind: type[StoreError]) -> None:
    error = error_reply(text)
    assert type(error) is kind
    assert str(error) == f"Redis: {text}"


def test_not_ready_is_a_kind_of_unavailable_and_refused_is_not() -> None:
    # Callers that wait and retry on "unavailable" also wait on "not ready";
    # a refusal is never mistaken for something that passes by itself.
    assert issubclass(ServerNotReady, StoreUnavailable)
    assert not issubclass(StoreRefused, StoreUnavailable)
    assert issubclass(StoreRefused, StoreError)


def test_an_os_error_is_described_as_unreachable() -> None:
    assert str(failure(ConnectionRefusedError(111, "Connection refused"))) == (
        "cannot reach Redis: Connection refused"
    )
    assert str(failure(TimeoutError("timed out"))) == "Redis did not answer in time"
    refused = StoreRefused("Redis: NOPERM")
    assert failure(refused) is refused


def test_incomplete_reads_keep_nothing_behind() -> None:
    """A reply arriving in pieces, many times over: no memory kept per incomplete read."""
    import tracemalloc

    parser = Parser()

    def split_reply() -> None:
        parser.feed(b"$5\r\nal")
        assert parser.gets() is False
        parser.feed(b"ice\r\n")
        assert parser.gets() == b"alice"

    for _ in range(1000):
        split_reply()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(10000):
        split_reply()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 10_000, grown
