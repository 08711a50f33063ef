"""`make soak`: 100 Postfix-like connections opening, working and closing for 60 s.

Each of 100 threads plays one smtpd process after another: it connects, sends
a few requests (CONNECT, HELO, MAIL, some RCPTs, DATA) with short pauses as a
mail client would cause, checks every answer, and closes; then the next smtpd
process takes its place. Half the sessions come from the granted address (OK
at RCPT), half from another (DUNNO), so both lookups stay exercised. One Redis,
our handler as the unit runs it, under systemd-socket-activate.

It reports, and fails (exit 1) unless:
- errors are 0 (a wrong answer, a closed connection, no answer within 10 s);
- no handler process is left behind once the connections are closed;
- memory stays flat: the listener's RSS and the handlers' median RSS at the
  end are within 10% (plus 1 MiB for measurement grain) of the first sample.
It also checks that every decision reached the audit socket.

With --server it soaks the Accept=no server (`pbs-activated policy-server`, as
units/pbs-policy-server.service runs it) instead: one process for all the
connections, whose RSS must stay flat and which must hold no more descriptors
after the clients closed than after one connection before the soak.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # support.py

from load import Connection, WrongAnswer  # noqa: E402
from servers import GRANTED_ADDRESS, REPO, rss_kib  # noqa: E402
from support import encode_request  # noqa: E402

CONNECTIONS = 100
DURATION = 60.0
SAMPLE_EVERY = 5.0
OTHER_ADDRESS = "198.51.100.7"
STATES = ("CONNECT", "EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "END-OF-MESSAGE")
LEAVE_TIME = 10.0
"""Seconds the handlers get to exit after their connections closed."""
MEMORY_GROWTH = 1.10
MEMORY_GRAIN_KIB = 1024


class Tally:
    """Counts shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions = 0
        self.requests = 0
        self.errors: list[str] = []

    def add(self, requests: int, error: str = "") -> None:
        with self.lock:
            self.sessions += 1
            self.requests += requests
            if error:
                self.errors.append(error)


def smtpd(path: Path, until: float, tally: Tally, seed: int) -> None:
    """One slot of Postfix's process limit: sessions one after another until `until`."""
    rng = random.Random(seed)
    while time.monotonic() < until:
        granted = rng.random() < 0.5
        address = GRANTED_ADDRESS if granted else OTHER_ADDRESS
        answered = 0
        try:
            connection = Connection(path, b"")
            connection.socket.settimeout(10)
            try:
                for _ in range(rng.randint(1, 3)):  # smtpd reuses its connection for a few mails
                    for state in STATES:
                        ok = state == "RCPT" and granted
                        connection.expected = b"action=OK\n\n" if ok else b"action=DUNNO\n\n"
                        connection.ask(encode_request(protocol_state=state, client_address=address))
                        answered += 1
                        time.sleep(rng.uniform(0, 0.02))
            finally:
                connection.close()
        except (OSError, WrongAnswer) as error:
            tally.add(answered, f"{type(error).__name__}: {error}")
            continue
        tally.add(answered)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--seconds", type=float, default=DURATION)
    parser.add_argument("--server", action="store_true", help="soak the Accept=no server")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from run import Bench

    with tempfile.TemporaryDirectory(prefix="pbs-soak-") as temporary:
        bench = Bench(Path(temporary))
        try:
            if options.server:
                ours = bench.server()
                descriptors = server_descriptors(ours, after_one_session=True)
            else:
                ours = bench.ours()
            outcome = soak(ours, options.connections, options.seconds)
            if options.server:
                descriptors = (descriptors[0], server_descriptors(ours)[1])
        finally:
            entries = bench.stop()
            unusual = bench.sink.unusual_entries()
    tally, samples, left = outcome
    status = report(tally, samples, left, entries)
    if options.server:
        before, after = descriptors
        kept = after <= before
        print(
            f"{'ok  ' if kept else 'FAIL'} server descriptors: {before} after one session, "
            f"{after} after the soak's clients closed"
        )
        status = status or int(not kept)
    if unusual:
        print(f"\n{len(unusual)} audit entries other than OK or DUNNO decisions, e.g.:")
        for message in sorted(set(unusual))[:10]:
            print(f"     {message}")
    return status


def server_descriptors(service, after_one_session: bool = False) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Open descriptors of the server (the listener execs it: the same PID), once settled.

    With `after_one_session`, one connection is answered and closed first, which
    starts the server and opens its connection to Redis: the baseline.
    """
    if after_one_session:
        connection = Connection(service.path, b"action=OK\n\n")
        connection.ask(encode_request())
        connection.close()
    time.sleep(1)
    count = len(list(Path(f"/proc/{service.listener_pid}/fd").iterdir()))
    return count, count


def soak(service, connections: int, seconds: float):  # type: ignore[no-untyped-def]
    """Run the clients, sampling memory; return the tally, the samples and the leftovers."""
    tally = Tally()
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=smtpd, args=(service.path, until, tally, index), daemon=True)
        for index in range(connections)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples = []
    while any(thread.is_alive() for thread in threads):
        time.sleep(min(SAMPLE_EVERY, max(0.1, until - time.monotonic())))
        if time.monotonic() > until:
            break
        handler_sizes = [size for pid in service.live_handlers() if (size := rss_kib(pid))]
        samples.append(
            (
                time.monotonic() - started,
                len(handler_sizes),
                statistics.median(handler_sizes) if handler_sizes else 0,
                sum(handler_sizes),
                rss_kib(service.listener_pid) or 0,
                tally.requests,
            )
        )
        print(
            f"soak: {samples[-1][0]:5.1f} s, {len(handler_sizes)} handlers, "
            f"{tally.requests} answers, {len(tally.errors)} errors",
            file=sys.stderr,
            flush=True,
        )
    for thread in threads:
        thread.join(timeout=30)
    service.wait_idle(LEAVE_TIME)
    left = service.live_handlers()
    return tally, samples, left


def report(
    tally: Tally,
    samples: list[tuple[float, int, float, int, int, int]],
    left: list[int],
    entries: int,
) -> int:
    print(
        f"\n{'time s':>7} {'handlers':>9} {'median RSS MiB':>15} {'sum RSS MiB':>12} "
        f"{'listener RSS MiB':>17} {'answers':>9}"
    )
    for moment, count, median, total, listener, answers in samples:
        print(
            f"{moment:7.1f} {count:9d} {median / 1024:15.2f} {total / 1024:12.1f} "
            f"{listener / 1024:17.2f} {answers:9d}"
        )
    first, last = samples[0], samples[-1]
    handler_flat = last[2] <= first[2] * MEMORY_GROWTH + MEMORY_GRAIN_KIB
    listener_flat = last[4] <= first[4] * MEMORY_GROWTH + MEMORY_GRAIN_KIB
    audited = entries >= tally.requests
    checks = [
        (
            f"sessions {tally.sessions}, answers {tally.requests}, errors {len(tally.errors)}",
            not tally.errors,
        ),
        (f"handler processes left behind: {len(left)}", not left),
        (f"handler median RSS {first[2] / 1024:.2f} -> {last[2] / 1024:.2f} MiB", handler_flat),
        (f"listener RSS {first[4] / 1024:.2f} -> {last[4] / 1024:.2f} MiB", listener_flat),
        (f"audit entries {entries} for {tally.requests} answers", audited),
    ]
    print()
    for text, good in checks:
        print(f"{'ok  ' if good else 'FAIL'} {text}")
    for error in tally.errors[:10]:
        print(f"     {error}")
    return 0 if all(good for _, good in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
