"""The in-container half of bench/booted_ab.py: sequential starts of two Accept=yes
units in one shuffled order, each start's connect -> answer and CPU.

Runs under the container's python3 as root (standard library only) next to a
copy of bench/booted_driver.py, whose cgroup counters it reads (see there why
from inside, and why a slice keeps its ended instances' CPU). Reads a JSON spec
on stdin, prints one JSON object: per side, per measured start in that side's
order, the milliseconds from connect() to the first answer's last byte and the
CPU (ms) of the side's slice, of PID 1 and of journald over the start.

Each side holds one answered connection for the whole run, as booted_driver
does: its slice (and so its CPU counter) lives on, and its dynamic user stays
allocated, for both sides alike, as at a site where smtpd processes hold their
policy connections.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I keeps it off

from booted_driver import JOURNALD, PID1, UNIFIED, ask, children, usage_seconds  # noqa: E402

GONE_TIMEOUT = 10.0
"""Seconds an ended connection's instance may take to be collected before the run
is abandoned: a handler that outlives its connection is a fault, not a figure."""
POLL_SECONDS = 0.002
SETTLE_SECONDS = 0.02
"""A pause after each instance is gone: the kernel folds a removed cgroup's CPU into
its slice a moment later, and the journal entries of the start are written then."""
KEEP_ALIVE_EVERY = 100
"""Starts between two requests on the held connections, far below the handler's
idle timeout (330 s), so that neither held instance ever ends in the middle."""


def ask_again(connection: socket.socket, request: bytes, expected: bytes) -> None:
    """One more request on a held connection, which resets its handler's idle timer."""
    connection.sendall(request)
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = connection.recv(4096)
        if not chunk:
            raise RuntimeError("a held connection was closed")
        answer += chunk
    if answer != expected:
        raise RuntimeError(f"a held connection answered {answer!r}, not {expected!r}")


def wait_for_instances(group: str, count: int) -> None:
    """Block until `group` holds at most `count` instances (the held ones)."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while len(children(group)) > count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{group}: an instance outlived its connection by {GONE_TIMEOUT} s")
        time.sleep(POLL_SECONDS)


def counters(group: str) -> tuple[float, float, float]:
    """CPU seconds so far of the side's slice, PID 1 and journald."""
    return usage_seconds(group), usage_seconds(PID1), usage_seconds(JOURNALD)


def one_start(side: dict[str, object], request: bytes, expected: bytes) -> dict[str, float]:
    """One fresh instance: its first answer, then its end; what it cost."""
    group = UNIFIED + "/" + str(side["slice"])
    before = counters(group)
    connection, seconds, answer = ask(str(side["socket"]), request)
    connection.close()
    if answer != expected:
        raise RuntimeError(f"{side['socket']} answered {answer!r}, not {expected!r}")
    wait_for_instances(group, int(side["held"]))  # type: ignore[call-overload]
    time.sleep(SETTLE_SECONDS)
    after = counters(group)
    unit, pid1, journald = ((a - b) * 1000 for a, b in zip(after, before, strict=True))
    return {"answer_ms": seconds * 1000, "unit_ms": unit, "pid1_ms": pid1, "journald_ms": journald}


def hold(sides: dict[str, dict[str, object]], request: bytes) -> dict[str, socket.socket]:
    """One answered connection per side, kept open; each side's instance count with it."""
    held = {}
    for label, side in sides.items():
        group = UNIFIED + "/" + str(side["slice"])
        held[label] = ask(str(side["socket"]), request)[0]
        side["held"] = len(children(group))
    return held


def main() -> None:
    spec = json.load(sys.stdin)
    request, expected = spec["request"].encode(), spec["answer"].encode()
    sides: dict[str, dict[str, object]] = spec["sides"]
    held = hold(sides, request)
    for _ in range(spec["warm_up"]):
        for side in sides.values():
            one_start(side, request, expected)
    measured: dict[str, list[dict[str, float]]] = {label: [] for label in sides}
    for number, label in enumerate(spec["order"]):
        if number % KEEP_ALIVE_EVERY == 0:
            for connection in held.values():
                ask_again(connection, request, expected)
        measured[label].append(one_start(sides[label], request, expected))
    for connection in held.values():
        connection.close()
    json.dump(measured, sys.stdout)


if __name__ == "__main__":
    main()
