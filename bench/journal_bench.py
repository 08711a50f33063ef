"""Benchmark of `pbs-activated journal`: catch-up throughput and journal-to-Redis latency.

Two figures, each against a baseline measured in the same run, on the same files:

- entries/s ingested from one journal file of N entries (10% logins) by a reader
  starting with no cursor; baseline: `journalctl --file F -o export > /dev/null`
  on the same file.
- journal -> Redis latency of single logins, p50 and p99; baseline:
  bench/journal_floor.py, a follower that only wakes, reads the entry and SETs a key.

Throughput is timed from the reader's READY=1 (journal open, Redis reached) to
its first "Following the journal: N entries" STATUS, i.e. the whole catch-up:
reading, checking trusted fields, parsing, one EVAL per login, one audit entry
per grant, cursor saves. journalctl only decodes and prints every field of every
entry, which is the cost of reading the file at all, so the ratio says what the
reader adds on top of reading. A second, informative baseline is a bare
python-systemd loop over the same file (`_next()` + MESSAGE).

Latency: a live systemd-journal-remote appends one login at a time to a journal
file the follower watches; the clock starts just before the entry is written to
journal-remote's stdin and stops when Redis publishes the keyspace event for the
key (CONFIG SET notify-keyspace-events K$). Both sides therefore include the same
journal-remote write and inotify wake-up; the floor is what any Python follower
using python-systemd and redis-py must pay, so p50/p99 ratios show the cost of the
reader's own work (trust check, parse, Lua EVAL, audit, STATUS) on the path. A
plain `redis-cli SET` round trip would leave the journal out and is a poorer
baseline; its figure is printed for reference.

Runs on loopback and unix sockets in a temporary directory only. Exits 0 (a
measurement is not a test).

    /usr/bin/python3 bench/journal_bench.py [--entries 100000] [--samples 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO / "tests"), str(BENCH)]

from journalfiles import (  # noqa: E402
    JournalWriter,
    NotifySink,
    dovecot_login,
    entry,
    write_journal,
)
from servers import PYTHON, AuditSink, start_redis  # noqa: E402
from support import RedisServer  # noqa: E402

OTHER_MESSAGES = (
    "pop3(alice)<4242><OCo+DgxhTcnAAAIK>: Disconnected: Logged out top=0/0, retr=0/0, "
    "del=0/0, size=0",
    "imap(bob)<4243><TBVIDgxhT6DAAAIL>: Disconnected: Logged out in=12 out=489 deleted=0 "
    "expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
    "auth-worker(494): conn unix:auth-worker (pid=493,uid=103): auth-worker<5>: "
    "pam(carol,192.0.2.12,<8fZRDgxhJbDAAAIM>): pam_authenticate() failed",
    "pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 0 secs): "
    "user=<carol>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1, session=<8fZRDgxhJbDAAAIM>",
    "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>, "
    "rip=198.51.100.9, lip=192.0.2.1, session=<AVFjDgxhQ8zAAAIM>",
)


def bench_address(index: int) -> str:
    """Distinct client addresses from 198.18.0.0/15, the benchmarking network."""
    return f"198.{18 + index // 65536}.{index // 256 % 256}.{index % 256}"


def catch_up_records(count: int, logins_every: int) -> list[dict[str, str]]:
    """`count` Dovecot entries of the last ten minutes, one in `logins_every` a login."""
    start = time.time() - 600
    records = []
    for index in range(count):
        at = start + 600 * index / count
        if index % logins_every == 0:
            records.append(dovecot_login(bench_address(index // logins_every), at=at))
        else:
            records.append(entry(OTHER_MESSAGES[index % len(OTHER_MESSAGES)], at=at))
    return records


def timed(command: list[str], **options: object) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, **options)  # type: ignore[call-overload]
    return time.perf_counter() - start


PYTHON_LOOP = """
import sys, time
from systemd import journal
reader = journal._Reader(0, sys.argv[1])
reader.add_match("_SYSTEMD_UNIT=dovecot.service")
start = time.perf_counter()
count = 0
while reader._next():
    reader._get("MESSAGE")
    count += 1
print(count, time.perf_counter() - start)
"""


def config_file(directory: Path, redis: RedisServer, ignore_bench_network: bool = False) -> Path:
    """The reader's config; optionally ignoring the logins' network, so nothing is written."""
    path = directory / ("pbs-no-writes.toml" if ignore_bench_network else "pbs-activated.toml")
    text = f'[redis]\nurl = "{redis.tcp_url}"\n'
    if ignore_bench_network:
        text += '[authorization]\nignore = ["198.18.0.0/15"]\n'
    path.write_text(text)
    return path


def catch_up(directory: Path, journal: Path, config: Path, audit: AuditSink) -> float:
    """Run a reader with no cursor over `journal`; return READY -> caught up, in seconds."""
    reader = Reader(directory, journal, config, audit.path)
    try:
        reader.notify.wait_for(lambda message: message.get("READY") == "1", 30)
        ready = time.perf_counter()
        reader.notify.wait_for(
            lambda message: message.get("STATUS", "").startswith("Following the journal: "),
            600,
        )
        return time.perf_counter() - ready
    finally:
        reader.stop()


class Reader:
    """`pbs-activated journal --directory DIR` from this checkout, as the unit runs it."""

    def __init__(self, directory: Path, journal: Path, config: Path, audit: Path) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="state-", dir=directory))
        self.notify = NotifySink(Path(tempfile.mkdtemp(prefix="n-", dir="/tmp")) / "notify")
        environment = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            STATE_DIRECTORY=str(self.state),
            NOTIFY_SOCKET=str(self.notify.path),
            PBS_ACTIVATED_JOURNAL_SOCKET=str(audit),
        )
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "pbs_activated",
                "--config",
                str(config),
                "journal",
                "--directory",
                str(journal),
            ],
            env=environment,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.notify.close()


def throughput(
    directory: Path,
    redis: RedisServer,
    audit: AuditSink,
    entries: int,
    logins_every: int,
    rounds: int,
) -> dict[str, float]:
    journal = directory / "catch-up"
    records = catch_up_records(entries, logins_every)
    started = time.perf_counter()
    write_journal(journal / "system.journal", records)
    written = time.perf_counter() - started
    del records
    journal_file = journal / "system.journal"
    config = config_file(directory, redis)
    no_writes = config_file(directory, redis, ignore_bench_network=True)
    expected = (entries + logins_every - 1) // logins_every
    baseline: list[float] = []
    loop: list[float] = []
    ours: list[float] = []
    unwritten: list[float] = []
    for _ in range(rounds):  # interleaved, so a change of load hits every side alike
        baseline.append(
            timed(
                ["journalctl", f"--file={journal_file}", "-o", "export"], stdout=subprocess.DEVNULL
            )
        )
        loop.append(
            float(
                subprocess.run(
                    [PYTHON, "-c", PYTHON_LOOP, str(journal)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[1]
            )
        )
        redis.command("FLUSHALL")
        ours.append(catch_up(directory, journal, config, audit))
        keys = int(redis.command("DBSIZE"))
        if keys != expected:
            raise RuntimeError(f"{keys} keys in Redis, {expected} expected")
        redis.command("FLUSHALL")
        unwritten.append(catch_up(directory, journal, no_writes, audit))
        if int(redis.command("DBSIZE")):
            raise RuntimeError("the reader wrote logins it was told to ignore")
    return {
        "entries": entries,
        "logins": (entries + logins_every - 1) // logins_every,
        "journal_remote_write_s": written,
        "journalctl_export_s": statistics.median(baseline),
        "python_systemd_loop_s": statistics.median(loop),
        "reader_s": statistics.median(ours),
        "reader_no_writes_s": statistics.median(unwritten),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_block(
    writer: JournalWriter, redis: RedisServer, prefix: str, first: int, samples: int
) -> list[float]:
    """Append `samples` single logins; time each until Redis announces its key."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.tcp_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"__keyspace@0__:{prefix}*")
    times = []
    for index in range(first, first + samples):
        address = bench_address(200_000 + index)
        wanted = f"__keyspace@0__:{prefix}{address}".encode()
        start = time.perf_counter()
        writer.append(dovecot_login(address))
        while True:
            # None also stands for a swallowed subscribe confirmation: not a timeout.
            message = pubsub.get_message(timeout=5)
            if message is not None and message["channel"] == wanted:
                break
            if time.perf_counter() - start > 5:
                raise RuntimeError(f"no keyspace event for {address} within 5 s")
        times.append(time.perf_counter() - start)
        time.sleep(0.005)  # single logins, not a burst
    pubsub.close()
    client.close()
    return times


def latency(
    directory: Path, redis: RedisServer, audit: AuditSink, samples: int
) -> dict[str, float]:
    journal = directory / "live"
    write_journal(journal / "system.journal", [entry("dovecot: master: starting up")])
    writer = JournalWriter(journal / "system.journal")
    redis.command("FLUSHALL")
    redis.command("CONFIG", "SET", "notify-keyspace-events", "K$")
    config = config_file(directory, redis)
    results: dict[str, list[float]] = {"floor": [], "reader": []}
    block = samples // 4
    for round_ in range(4):  # floor, reader, floor, reader: no drift favours either
        if round_ % 2 == 0:
            sink = NotifySink(Path(tempfile.mkdtemp(prefix="n-", dir="/tmp")) / "notify")
            process = subprocess.Popen(
                [PYTHON, str(BENCH / "journal_floor.py"), str(journal), redis.tcp_url],
                env=dict(os.environ, NOTIFY_SOCKET=str(sink.path)),
            )
            try:
                sink.wait_for(lambda message: message.get("READY") == "1", 30)
                results["floor"] += latency_block(
                    writer, redis, "pbs:floor:", round_ * block, block
                )
            finally:
                process.terminate()
                process.wait(timeout=10)
                sink.close()
        else:
            reader = Reader(directory, journal, config, audit.path)
            try:
                reader.notify.wait_for(
                    lambda message: message.get("STATUS", "").startswith("Following the journal: "),
                    30,
                )
                results["reader"] += latency_block(
                    writer, redis, "pbs:client:", round_ * block, block
                )
            finally:
                reader.stop()
    writer.close()
    round_trips = []
    for _ in range(50):
        round_trips.append(
            timed(
                ["redis-cli", "-u", redis.tcp_url, "SET", "pbs:rtt", "1"], stdout=subprocess.DEVNULL
            )
        )
    return {
        "samples_each": len(results["reader"]),
        "floor_p50_ms": 1000 * percentile(results["floor"], 0.50),
        "floor_p99_ms": 1000 * percentile(results["floor"], 0.99),
        "reader_p50_ms": 1000 * percentile(results["reader"], 0.50),
        "reader_p99_ms": 1000 * percentile(results["reader"], 0.99),
        "redis_cli_set_p50_ms": 1000 * percentile(round_trips, 0.50),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--logins-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="throughput runs (median)")
    parser.add_argument("--samples", type=int, default=400, help="latency samples per side")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    arguments = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pbs-jbench-") as name:
        directory = Path(name)
        (directory / "redis").mkdir()
        redis = start_redis(directory / "redis")
        audit = AuditSink(directory / "audit.sock")
        try:
            rates = throughput(
                directory, redis, audit, arguments.entries, arguments.logins_every, arguments.rounds
            )
            delays = latency(directory, redis, audit, arguments.samples * 2)
        finally:
            audit.stop()
            redis.stop()
    report(rates, delays)
    load = {"load_before": load_before, "load_after": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(
        f"(load average {load['load_before']:.1f} before, {load['load_after']:.1f} after, "
        f"{load['cpus']} CPUs: other work on the machine slows both sides of each ratio)"
    )
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({**rates, **delays, **load}, indent=2) + "\n")
    return 0


def report(rates: dict[str, float], delays: dict[str, float]) -> None:
    entries = rates["entries"]
    per_second = {
        name: entries / rates[name]
        for name in (
            "journalctl_export_s",
            "python_systemd_loop_s",
            "reader_s",
            "reader_no_writes_s",
        )
    }
    print(
        f"catch-up: {entries:.0f} entries, {rates['logins']:.0f} logins "
        f"(file written by journal-remote in {rates['journal_remote_write_s']:.2f} s)"
    )
    print(
        f"  journalctl -o export > /dev/null   {per_second['journalctl_export_s']:>10,.0f} "
        f"entries/s  (baseline)"
    )
    baseline = per_second["journalctl_export_s"]
    loop = per_second["python_systemd_loop_s"]
    print(
        f"  python-systemd _next()+MESSAGE     {loop:>10,.0f} entries/s  "
        f"({loop / baseline:.2f}x)"
    )
    print(
        f"  pbs-activated journal              {per_second['reader_s']:>10,.0f} entries/s  "
        f"({per_second['reader_s'] / baseline:.2f}x baseline)"
    )
    unwritten = per_second["reader_no_writes_s"]
    print(
        f"  (the same, logins ignored: no Redis {unwritten:>10,.0f} entries/s  "
        f"({unwritten / baseline:.2f}x): the reader's own work)"
    )
    print(f"latency journal -> Redis, {delays['samples_each']:.0f} single logins each:")
    print(
        f"  floor (wake, read, SET)   p50 {delays['floor_p50_ms']:.2f} ms  "
        f"p99 {delays['floor_p99_ms']:.2f} ms  (baseline)"
    )
    print(
        f"  pbs-activated journal     p50 {delays['reader_p50_ms']:.2f} ms  "
        f"p99 {delays['reader_p99_ms']:.2f} ms  "
        f"({delays['reader_p50_ms'] / delays['floor_p50_ms']:.2f}x / "
        f"{delays['reader_p99_ms'] / delays['floor_p99_ms']:.2f}x baseline)"
    )
    print(f"  (redis-cli SET, process start included: p50 {delays['redis_cli_set_p50_ms']:.2f} ms)")


if __name__ == "__main__":
    sys.exit(main())
