"""Benchmark of `pbs-activated report`: entries/s against `journalctl -o export` on the same data.

A month of a busy host, compressed: N entries in one journal file written by
systemd-journal-remote (tests/journalfiles.py), the mix a policy host writes
(per 10 entries: 1 login, 5 RCPT decisions OK, 2 DUNNO at other stages, 1
Postfix reject line, 1 line of another program that the selection skips).

Baseline: `journalctl --directory D -o export` with the same selection and
fields, written to /dev/null: the cost of reading those entries at all. The
report is that journalctl plus parsing its stream and summing; the ratio says
what it adds. Exits 0 (a measurement is not a test).

    /usr/bin/python3 bench/report_bench.py [--entries 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from journalfiles import entry, write_journal  # noqa: E402

from pbs_activated.admin import report  # noqa: E402

START = time.time() - 30 * 86400


def records(count: int):  # type: ignore[no-untyped-def]
    step = 30 * 86400 / count
    for index in range(count):
        at = START + index * step
        address = f"192.0.{(index // 250) % 250}.{index % 250 + 1}"
        kind = index % 10
        user = f"user{index % 997}"
        if kind == 0:
            yield entry(
                f"authorized {address}",
                unit="pbs-journal.service",
                at=at,
                identifier="pbs-activated",
                PBS_EVENT="login",
                PBS_USER=user,
                PBS_CLIENT_ADDRESS=address,
            )
        elif kind <= 7:
            yield entry(
                "decision",
                unit="pbs-policy@1.service",
                at=at,
                identifier="pbs-activated",
                PBS_ACTION="OK" if kind <= 5 else "DUNNO",
                PBS_USER=user,
                PBS_CLIENT_ADDRESS=address,
                PBS_PROTOCOL_STATE="RCPT" if kind <= 5 else "DATA",
            )
        elif kind == 8:
            yield entry(
                f"NOQUEUE: reject: RCPT from unknown[{address}]: 554 5.7.1"
                " <x@remote.test>: Relay access denied; proto=SMTP",
                unit="postfix@-.service",
                at=at,
                identifier="postfix/smtpd",
            )
        else:
            yield entry("pop3-login: Disconnected", at=at)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        write_journal(directory / "system.journal", records(options.entries))
        since, until = "@0", f"@{int(time.time()) + 60}"
        baseline, ours = [], []
        selected = 0
        for _ in range(options.rounds):
            started = time.perf_counter()
            subprocess.run(
                report.journalctl_command(since, until, temporary),
                stdout=subprocess.DEVNULL,
                check=True,
            )
            baseline.append(time.perf_counter() - started)
            started = time.perf_counter()
            selected = report.collect(since, until, temporary).entries
            ours.append(time.perf_counter() - started)
    base, mine = min(baseline), min(ours)
    print(f"entries in the file: {options.entries}, selected by journalctl: {selected}")
    print(f"journalctl -o export: {selected / base:,.0f} entries/s ({base:.2f} s)")
    print(f"pbs-activated report: {selected / mine:,.0f} entries/s ({mine:.2f} s)")
    print(f"ratio (report / journalctl): {base / mine:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
