"""`make bench`: our RESP reply codec (pbs_activated.store.resp.Parser) against Debian's hiredis.

resp.Parser has hiredis.Reader's interface, so the handler could take either.
What hiredis would cost and save, measured in one run:

- its import, in a fresh `/usr/bin/python3 -IS` that has already loaded
  pbs_activated.store.resp (what the handler loads anyway), with its first Reader():
  paid once per process, so once per Postfix connection by the handler;
- the cost of each reply the handler or the Accept=no server reads (feed the
  bytes as they arrive, then gets): a GET's bulk reply in one piece, a nil, an
  MGET of 1, 16 and 64 values (every other one nil), and replies cut in pieces;
  ours and hiredis's taking turns, the same loop around both (its few tens of
  ns are in both columns, so the ratios understate the difference a little);
- the balance for one Postfix connection to the handler: the import against
  what hiredis saves on the replies of a typical connection.

    /usr/bin/python3 bench/codec.py [--starts N] [--loops N] [--rounds N]

Needs python3-hiredis (Debian 12: 1.0.1; Debian 13: 2.3.2). Exits 0: a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
INSTALLED_PACKAGES = "/usr/lib/python3/dist-packages"

IMPORT_TIMER = """
import sys, time
sys.path.insert(0, {repo!r})
from pbs_activated.store import resp
sys.path.append({installed!r})
started = time.perf_counter_ns()
import hiredis
hiredis.Reader()
print(time.perf_counter_ns() - started)
"""
"""Run under -IS as the launcher runs the handler: hiredis on top of what it has loaded."""


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def mget(count: int) -> bytes:
    """An MGET reply of `count` keys, every other one unknown (nil)."""
    values = [b"alice" if index % 2 == 0 else None for index in range(count)]
    return b"*%d\r\n" % count + b"".join(bulk(value) for value in values)


def cut(data: bytes, pieces: int) -> list[bytes]:
    """`data` in `pieces` nearly equal parts, as a slow socket would deliver it."""
    size = -(-len(data) // pieces)
    return [data[start : start + size] for start in range(0, len(data), size)]


CASES: list[tuple[str, list[bytes]]] = [
    ("GET, a user, one piece", [bulk(b"alice")]),
    ("GET, nil", [bulk(None)]),
    ("AUTH's +OK", [b"+OK\r\n"]),
    ("MGET of 1", [mget(1)]),
    ("MGET of 16", [mget(16)]),
    ("MGET of 64", [mget(64)]),
    ("GET, a user, in 2 pieces", cut(bulk(b"alice"), 2)),
    ("MGET of 16, in 3 pieces", cut(mget(16), 3)),
]

CONNECTION = {"AUTH's +OK": 1, "GET, a user, one piece": 1, "GET, nil": 1}
"""The replies of a typical Postfix connection to the handler: it logs in (AUTH),
and of its handful of requests (one mail: CONNECT... RCPT, DATA, END-OF-MESSAGE),
the RCPT ones are looked up: one to a relayed recipient from a granted client
and, for the balance, one from a client that is not (nil)."""


def import_ns(starts: int) -> list[int]:
    """Nanoseconds `import hiredis` + `Reader()` take in `starts` fresh interpreters."""
    code = IMPORT_TIMER.format(repo=str(REPO), installed=INSTALLED_PACKAGES)
    return [
        int(
            subprocess.run(
                [PYTHON, "-IS", "-c", code], capture_output=True, text=True, check=True, timeout=30
            ).stdout
        )
        for _ in range(starts)
    ]


def per_reply_ns(make: Callable[[], object], pieces: list[bytes], loops: int) -> float:
    """Nanoseconds to feed `pieces` and take the reply, as Connection.reply does."""
    parser = make()
    feed, gets = parser.feed, parser.gets  # type: ignore[attr-defined]
    started = time.perf_counter_ns()
    for _ in range(loops):
        for piece in pieces:
            feed(piece)
            gets()
    elapsed = time.perf_counter_ns() - started
    assert gets() is False  # every reply was taken
    return elapsed / loops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=41, help="fresh interpreters timed")
    parser.add_argument("--loops", type=int, default=20000, help="replies per timing")
    parser.add_argument("--rounds", type=int, default=9, help="timings of each, taking turns")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.append(INSTALLED_PACKAGES)
    try:
        import hiredis
    except ImportError:
        print("codec: python3-hiredis is not installed; nothing to compare")
        return 0
    from pbs_activated.store import resp

    for _, pieces in CASES:  # both read every case alike before anything is timed
        values = []
        for make in (resp.Parser, hiredis.Reader):
            reader = make()
            for piece in pieces:
                reader.feed(piece)
            values.append(repr(reader.gets()).replace("None", "nil"))
        assert values[0] == values[1], values

    print(
        f"hiredis {hiredis.__version__} against resp.Parser, {options.rounds} rounds "
        f"of {options.loops} replies each, taking turns:",
        flush=True,
    )
    costs: dict[str, tuple[float, float]] = {}
    for name, pieces in CASES:
        ours, theirs = [], []
        for _ in range(options.rounds):
            ours.append(per_reply_ns(resp.Parser, pieces, options.loops))
            theirs.append(per_reply_ns(hiredis.Reader, pieces, options.loops))
        costs[name] = (statistics.median(ours), statistics.median(theirs))
    print(f"  {'reply (feed + gets)':<28} {'ours ns':>8} {'hiredis ns':>10} {'hiredis/ours':>13}")
    for name, (ours_ns, theirs_ns) in costs.items():
        print(f"  {name:<28} {ours_ns:8.0f} {theirs_ns:10.0f} {theirs_ns / ours_ns:12.2f}x")

    imports = import_ns(options.starts)
    imported = statistics.median(imports)
    quartiles = statistics.quantiles(imports, n=4)
    print(
        f"import hiredis + Reader() in a fresh python3 -IS, median of {options.starts}: "
        f"{imported / 1000:.0f} us (quartiles {quartiles[0] / 1000:.0f}-"
        f"{quartiles[2] / 1000:.0f} us)"
    )

    saved = sum(count * (costs[name][0] - costs[name][1]) for name, count in CONNECTION.items())
    replies = sum(CONNECTION.values())
    print(
        f"one Postfix connection to the handler ({replies} replies: "
        f"{', '.join(CONNECTION)}): hiredis saves {saved / 1000:.2f} us and costs "
        f"{imported / 1000:.0f} us to import: balance {(saved - imported) / 1000:+.0f} us"
    )
    per_get = costs["GET, a user, one piece"][0] - costs["GET, a user, one piece"][1]
    if per_get > 0:
        print(f"  break-even: {imported / per_get:.0f} GET replies on one connection")
    else:
        print("  hiredis is no faster on a GET reply: no break-even")
    for count in (16, 64):
        ours_ns, theirs_ns = costs[f"MGET of {count}"]
        print(
            f"Accept=no server (imports once): an MGET of {count} saves "
            f"{(ours_ns - theirs_ns) / count / 1000:.2f} us per request looked up"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
