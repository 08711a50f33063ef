"""resp.Parser reads every RESP2 reply as hiredis.Reader does, however it is cut.

The handler's reply codec mirrors hiredis.Reader's interface (`feed`, `gets`
returning False until a reply is whole, error replies as values at any depth) so
that the two can be measured against each other (bench/codec.py); this holds
them to the same values. Skipped where Debian's python3-hiredis is not installed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbs_activated.store import resp

hiredis = pytest.importorskip("hiredis")

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LINE = st.binary(max_size=40).filter(lambda text: b"\r" not in text and b"\n" not in text)
"""What a simple string or an error may hold: anything but the line's end."""


def bulk(payload: bytes) -> tuple[bytes, object]:
    return b"$%d\r\n%s\r\n" % (len(payload), payload), payload


def array(items: list[tuple[bytes, object]]) -> tuple[bytes, object]:
    return b"*%d\r\n" % len(items) + b"".join(wire for wire, _ in items), [v for _, v in items]


scalars = st.one_of(
    st.binary(max_size=64).map(bulk),
    st.just((b"$-1\r\n", None)),
    INT64.map(lambda number: (b":%d\r\n" % number, number)),
    LINE.map(lambda text: (b"+" + text + b"\r\n", text)),
    LINE.map(lambda text: (b"-" + text + b"\r\n", ("error", text.decode("utf-8", "replace")))),
    st.just((b"*-1\r\n", None)),
)
replies = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6).map(array), max_leaves=20)
"""(wire bytes, value) of RESP2 replies: bulk, nil, integer, simple string, error and
nested arrays, errors among an array's items as well as at the top."""


def comparable(value: object) -> object:
    """A reply with its error replies as ("error", message), whichever parser made them."""
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, Exception):
        return ("error", str(value))
    return value


def read_all(parser: object, pieces: list[bytes]) -> list[object]:
    """Feed `pieces` one by one, taking every whole reply after each."""
    values = []
    for piece in pieces:
        parser.feed(piece)  # type: ignore[attr-defined]
        while (value := parser.gets()) is not False:  # type: ignore[attr-defined]
            values.append(comparable(value))
    return values


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=500, deadline=None)
@given(st.lists(replies, min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=8))
def test_random_replies_cut_anywhere_read_as_hiredis_reads_them(
    pipeline: list[tuple[bytes, object]], cuts: list[int]
) -> None:
    data = b"".join(wire for wire, _ in pipeline)
    pieces = split(data, cuts)
    ours, theirs = read_all(resp.Parser(), pieces), read_all(hiredis.Reader(), pieces)
    assert ours == theirs == [comparable(value) for _, value in pipeline]


def test_an_error_reply_is_a_value_at_the_top_and_inside_an_array_for_both() -> None:
    data = b"-ERR top\r\n*2\r\n-WRONGTYPE inner\r\n$1\r\nx\r\n"
    expected = [("error", "ERR top"), [("error", "WRONGTYPE inner"), b"x"]]
    assert read_all(resp.Parser(), [data]) == read_all(hiredis.Reader(), [data]) == expected
