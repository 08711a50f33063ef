"""`make bench`: our handler against the interpreter's floor and the 2010 node.js server.

Every figure of issue #5's goals table comes from this one run, on this machine:

| figure | compared with | goal |
| connect -> first answer (median of fresh connections, one at a time) | floor | <= 2x |
| 64 new connections at once, all answered (median of rounds) | floor | <= 2x |
| steady: 16 connections x 500 requests, requests/s | seed | >= 1.5x |
| steady: 1 connection x 3000 requests, requests/s | seed | >= 1.2x |
| resident memory (VmRSS) per handler holding a connection | floor | <= 1.5x |

The two steady figures are also taken for the Accept=no alternative,
`pbs-activated policy-server` (units/pbs-policy-server.service), one process for
all connections, started by systemd-socket-activate without --accept. For each
steady figure the bench also reports the CPU per request of every process
involved (bench/cpu.py), which says whether a figure is bound by CPU or by the
wait from one process to the next.

Our handler runs as the unit runs it (its ExecStart=, pointed at this
checkout) under systemd-socket-activate --accept --inetd, with
$CACHE_DIRECTORY set as CacheDirectory= sets it, and reaches Redis as it
reaches the package's own store: over its unix socket, logging in as the
pbs-policy ACL user named in its environment as pbs-policy@.service names
it. The same handler over loopback TCP without a login (0.1.0's default) is
measured beside it. The floor runs under the same
listener. The seed runs as its article says, on the same Redis (over TCP, as
its default user), with its console log sent to /dev/null.

Run with Debian's /usr/bin/python3, as root or not; it only uses loopback, unix
sockets and a temporary directory. Exits 0 even when a goal is missed (the
table says so): a measurement is not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # support.py

from cpu import CpuMeter  # noqa: E402
from load import (  # noqa: E402
    first_answer_times,
    held_connections,
    median_ms,
    steady,
    storm,
)
from servers import (  # noqa: E402
    BENCH,
    GRANTED_ADDRESS,
    PYTHON,
    REPO,
    SERVER_UNIT,
    ActivatedService,
    AuditSink,
    SeedServer,
    rss_kib,
    shipped_handler_command,
    start_redis,
)

FLOOR_ANSWER = b"action=DUNNO\n\n"
OUR_ANSWER = b"action=OK\n\n"
SEED_ANSWER = b"action=ok\n\n"

PIP_CONSOLE_SCRIPT = """#!/usr/bin/python3
# -*- coding: utf-8 -*-
import re
import sys
from pbs_activated.admin.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""
"""What pip and pybuild generate as /usr/bin/pbs-activated (console_scripts), for comparison."""

DASH_C = (
    "import sys; sys.path.append({repo!r});"
    " from pbs_activated.admin.cli import main; sys.exit(main())"
)
"""The units' ExecStart= before the launcher: `python3 -I -S -c DASH_C policy`."""

IMPORT_AS_DASH_M = (
    "import sys; sys.path.append({repo!r}); import runpy; "
    "runpy.run_module('pbs_activated', run_name='__main__', alter_sys=True)"
)
"""`python3 -I -m pbs_activated policy` with this checkout on the path (-I ignores PYTHONPATH)."""


class Bench:
    """The servers of one run, in one temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = start_redis(self._make("redis"))
        from pbs_activated.store.keys import client_key

        self.redis.command("SET", client_key(GRANTED_ADDRESS), "alice")
        self.redis.command("SET", GRANTED_ADDRESS, "alice")  # the seed's key: the bare address
        self.sink = AuditSink(directory / "journal.sock")
        self.config = directory / "pbs-activated.toml"
        self.config.write_text(f'[redis]\nurl = "{self.redis.url}"\ncredentials = "component"\n')
        self.tcp_config = directory / "tcp.toml"
        self.tcp_config.write_text(f'[redis]\nurl = "{self.redis.tcp_url}"\n')
        self.environment = {
            "PBS_ACTIVATED_CONFIG": str(self.config),
            "PBS_ACTIVATED_JOURNAL_SOCKET": str(self.sink.path),
            "CACHE_DIRECTORY": str(self._make("cache")),
            **self._policy_user(),
        }
        self.launchers = self._make("launchers")
        """Where the units' launcher is copied, pointed at this checkout."""
        self.services: list[ActivatedService] = []
        self.seed: SeedServer | None = None

    def _policy_user(self) -> dict[str, str]:
        """The store's pbs-policy ACL user (acl.py), and the environment naming it as the unit's.

        The seed and redis-cli keep Redis's open default user, over TCP.
        """
        from pbs_activated.store import acl

        password = "bench-policy-secret"
        self.redis.command(
            "ACL",
            "SETUSER",
            acl.POLICY_USER,
            "reset",
            "on",
            f">{password}",
            "resetchannels",
            "-@all",
            *acl.RULES[acl.POLICY_USER],
        )
        secret = self._make("secrets") / acl.POLICY_USER
        secret.write_text(password + "\n")
        return {
            "PBS_ACTIVATED_STORE_USER": acl.POLICY_USER,
            "PBS_ACTIVATED_STORE_PASSWORD_FILE": str(secret),
        }

    def _make(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir()
        return path

    def activated(
        self, name: str, command: list[str], accept: bool = True, **environment: str
    ) -> ActivatedService:
        service = ActivatedService(self.directory / f"{name}.sock", command, environment, accept)
        self.services.append(service)
        return service

    def floor(self) -> ActivatedService:
        return self.activated("floor", [PYTHON, "-I", "-S", str(BENCH / "floor.py")])

    def ours(
        self,
        name: str = "ours",
        command: list[str] | None = None,
        accept: bool = True,
        **changes: str,
    ) -> ActivatedService:
        """Our handler; `changes` override the environment (an empty value removes it)."""
        environment = {k: v for k, v in dict(self.environment, **changes).items() if v}
        command = command or shipped_handler_command(self.launchers)
        return self.activated(name, command, accept, **environment)

    def server(self, name: str = "server") -> ActivatedService:
        """The Accept=no server, as pbs-policy-server.service starts it."""
        return self.ours(name, shipped_handler_command(self.launchers, SERVER_UNIT), accept=False)

    def cpu_meter(self, service_pids: Callable[[], list[int]]) -> CpuMeter:
        """A meter of a service's processes with Redis, the audit sink and this load client."""
        assert self.redis.process is not None
        redis, sink = self.redis.process.pid, self.sink.process.pid
        return CpuMeter(
            lambda: {
                "service": service_pids(),
                "redis": [redis],
                "journal": [sink],
                "client": [os.getpid()],
            }
        )

    def start_seed(self) -> SeedServer:
        directory = self.directory
        self.seed = SeedServer(directory / "seed", directory / "seed.sock", self.redis.port)
        return self.seed

    def stop(self) -> int:
        """Stop everything; return the number of audit entries received."""
        for service in self.services:
            service.stop()
        if self.seed is not None:
            self.seed.stop()
        entries = self.sink.stop()
        self.redis.stop()
        return entries


def first_answers(services: list[tuple[ActivatedService, bytes]], count: int) -> list[float]:
    """Median connect -> first answer (ms) of each service, taking turns, each start alone.

    Between connections the bench waits until the previous handler has exited,
    so every start is measured on an otherwise idle machine, and the services
    take turns so that drift in the machine's speed hits them alike.
    """
    times: list[list[float]] = [[] for _ in services]
    for _ in range(count):
        for index, (service, expected) in enumerate(services):
            times[index] += first_answer_times(service.path, expected, 1)
            service.wait_idle()
    return [median_ms(series) for series in times]


def storms(service: ActivatedService, expected: bytes, count: int, rounds: int) -> float:
    """Median seconds for `count` simultaneous new connections to be answered."""
    results = []
    for _ in range(rounds):
        results.append(storm(service.path, expected, count))
        service.wait_idle()
    return statistics.median(results)


def paired_storms(
    services: list[tuple[ActivatedService, bytes]], count: int, rounds: int
) -> list[list[float]]:
    """Seconds of each round's storm for each service, the services taking turns."""
    results: list[list[float]] = [[] for _ in services]
    for _ in range(rounds):
        for index, (service, expected) in enumerate(services):
            results[index].append(storm(service.path, expected, count))
            service.wait_idle()
    return results


def handler_rss_kib(service: ActivatedService, expected: bytes, count: int) -> float:
    """Median VmRSS (KiB) of handlers each holding an answered connection."""
    with held_connections(service.path, expected, count):
        time.sleep(0.2)  # every handler has written its audit entry and waits
        sizes = [size for pid in service.live_handlers() if (size := rss_kib(pid)) is not None]
    service.wait_idle()
    return statistics.median(sizes)


def handler_import_ms(bench: Bench) -> float:
    """Milliseconds the shipped command spends importing (python3 -X importtime), stdin empty.

    The launcher's own #! line, with -X importtime added (-I ignores PYTHONPROFILEIMPORTTIME).
    """
    launcher, *arguments = shipped_handler_command(bench.launchers)
    interpreter = Path(launcher).read_text().splitlines()[0].removeprefix("#!").split()
    result = subprocess.run(
        [*interpreter, "-X", "importtime", launcher, *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PBS_ACTIVATED_JOURNAL_SOCKET": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    total = 0
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            fields = line.split("|")
            if fields[1].strip().isdigit() and not fields[2].startswith("  "):
                total += int(fields[1])
    return total / 1000


class Figure:
    """One row of the goals table: ours against a base, and the goal for the ratio."""

    def __init__(
        self,
        name: str,
        base: float,
        ours: float,
        goal: float,
        at_most: bool,
        round_ratios: list[float] | None = None,
    ) -> None:
        self.name, self.base, self.ours, self.goal, self.at_most = name, base, ours, goal, at_most
        self.round_ratios = round_ratios or []
        """Ratio of each round against the base's round next to it: how noisy the figure is."""

    @property
    def ratio(self) -> float:
        return self.ours / self.base

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal if self.at_most else self.ratio >= self.goal

    def row(self) -> str:
        sign = "<=" if self.at_most else ">="
        verdict = "met" if self.met else "MISSED"
        spread = ""
        if self.round_ratios:
            spread = f"  (rounds {min(self.round_ratios):.2f}-{max(self.round_ratios):.2f}x)"
        return (
            f"{self.name:<46} {self.base:>9.1f} {self.ours:>9.1f} {self.ratio:>6.2f}x"
            f"  {sign} {self.goal:g}x  {verdict}{spread}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200, help="fresh connections each")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of each throughput figure")
    parser.add_argument("--no-variants", action="store_true", help="skip the start-up variants")
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="pbs-bench-") as temporary:
        bench = Bench(Path(temporary))
        try:
            report = measure(bench, options.connections, options.rounds)
            if not options.no_variants:
                report += variants(bench, options.connections // 2)
                report += tcp_throughput(bench, options.rounds)
        finally:
            entries = bench.stop()
    report.append(f"audit entries received from our handler: {entries}")
    print("\n".join(report))
    return 0


def progress(text: str) -> None:
    print(f"bench: {text} ...", file=sys.stderr, flush=True)


def measure(bench: Bench, connections: int, rounds: int) -> list[str]:
    """Take every figure of the goals table; return the report's lines."""
    floor, ours = bench.floor(), bench.ours()
    seed = bench.start_seed()

    progress(f"connect -> first answer, {connections} fresh connections each")
    floor_first, our_first = first_answers([(floor, FLOOR_ANSWER), (ours, OUR_ANSWER)], connections)
    seed_first = median_ms(first_answer_times(seed.path, SEED_ANSWER, connections))

    progress(f"64 new connections at once, {rounds} rounds")
    pair = [(floor, FLOOR_ANSWER), (ours, OUR_ANSWER)]
    floor_storms, our_storms = paired_storms(pair, 64, rounds)
    floor_storm, our_storm = statistics.median(floor_storms), statistics.median(our_storms)

    progress(f"steady throughput, {rounds} rounds taking turns with the seed")
    ceiling = bench.activated(
        "ceiling",
        [PYTHON, "-I", "-S", str(BENCH / "floor_lookup.py"), str(bench.redis.port)],
        PBS_ACTIVATED_JOURNAL_SOCKET=str(bench.sink.path),
    )
    server = bench.server()
    server_start = first_answer_times(server.path, OUR_ANSWER, 1)[0]  # its first start
    rates, round_ratios, server_rates, server_ratios = {}, {}, {}, {}
    cpu_rows = []
    for shape in ((16, 500), (1, 3000)):
        our_rates, seed_rates, ceiling_rates, serving = [], [], [], []
        meters = {
            "seed": bench.cpu_meter(lambda: [seed.pid]),
            "handler": bench.cpu_meter(ours.handler_pids),
            "server": bench.cpu_meter(lambda: [server.listener_pid]),
            "ceiling": bench.cpu_meter(ceiling.handler_pids),
        }
        for _ in range(rounds):
            our_rates.append(steady(ours.path, OUR_ANSWER, *shape, cpu=meters["handler"]))
            ours.wait_idle()
            seed_rates.append(steady(seed.path, SEED_ANSWER, *shape, cpu=meters["seed"]))
            ceiling_rates.append(steady(ceiling.path, OUR_ANSWER, *shape, cpu=meters["ceiling"]))
            ceiling.wait_idle()
            serving.append(steady(server.path, OUR_ANSWER, *shape, cpu=meters["server"]))
        floor_rate = steady(floor.path, FLOOR_ANSWER, *shape)
        floor.wait_idle()
        rates[shape] = (
            statistics.median(seed_rates),
            statistics.median(our_rates),
            floor_rate,
            statistics.median(ceiling_rates),
        )
        round_ratios[shape] = [o / b for o, b in zip(our_rates, seed_rates, strict=True)]
        server_rates[shape] = (statistics.median(seed_rates), statistics.median(serving))
        server_ratios[shape] = [o / b for o, b in zip(serving, seed_rates, strict=True)]
        measured = {
            "seed": seed_rates,
            "handler": our_rates,
            "server": serving,
            "ceiling": ceiling_rates,
        }
        cpu_rows += cpu_lines(shape, meters, {k: statistics.median(v) for k, v in measured.items()})

    with held_connections(server.path, OUR_ANSWER, 16):
        time.sleep(0.2)
        server_rss = rss_kib(server.listener_pid) or 0  # the listener execs it: same PID
    progress("resident memory of 8 handlers each holding a connection")
    floor_rss = handler_rss_kib(floor, FLOOR_ANSWER, 8)
    our_rss = handler_rss_kib(ours, OUR_ANSWER, 8)
    seed_rss = rss_kib(seed.pid) or 0

    figures = [
        Figure("connect -> first answer, median ms", floor_first, our_first, 2.0, True),
        Figure(
            "64 new connections at once, all answered, ms",
            floor_storm * 1000,
            our_storm * 1000,
            2.0,
            True,
            [o / f for o, f in zip(our_storms, floor_storms, strict=True)],
        ),
        Figure(
            "steady 16 conn x 500 req, req/s, vs seed",
            *rates[(16, 500)][:2],
            1.5,
            False,
            round_ratios[(16, 500)],
        ),
        Figure(
            "steady 1 conn x 3000 req, req/s, vs seed",
            *rates[(1, 3000)][:2],
            1.2,
            False,
            round_ratios[(1, 3000)],
        ),
        Figure(
            "RSS per handler holding a connection, MiB", floor_rss / 1024, our_rss / 1024, 1.5, True
        ),
        Figure(
            "Accept=no server: steady 16 x 500, vs seed",
            *server_rates[(16, 500)],
            1.5,
            False,
            server_ratios[(16, 500)],
        ),
        Figure(
            "Accept=no server: steady 1 x 3000, vs seed",
            *server_rates[(1, 3000)],
            1.2,
            False,
            server_ratios[(1, 3000)],
        ),
    ]
    return [
        "",
        f"{'figure':<46} {'base':>9} {'ours':>9} {'ratio':>7}  goal",
        "-" * 86,
        *(figure.row() for figure in figures),
        "",
        "base: the floor (python3 -I -S answering without imports) for start-up and memory,",
        "the seed's node.js server for throughput. For orientation:",
        f"  seed, connect -> first answer (a resident server), median ms: {seed_first:.2f}",
        f"  floor, steady req/s: 16x500 {rates[16, 500][2]:.0f}, 1x3000 {rates[1, 3000][2]:.0f}",
        "  ceiling of one process per connection (bench/floor_lookup.py: GET + audit datagram,",
        f"    no parsing), vs seed: 16x500 {rates[16, 500][3] / rates[16, 500][0]:.2f}x, "
        f"1x3000 {rates[1, 3000][3] / rates[1, 3000][0]:.2f}x",
        f"  seed's node process RSS after the run: {seed_rss / 1024:.1f} MiB",
        f"  Accept=no server: its start, connect -> first answer {server_start * 1000:.1f} ms;",
        f"    RSS holding 16 connections {server_rss / 1024:.1f} MiB "
        f"(16 handlers: {16 * our_rss / 1024:.1f} MiB)",
        f"  our handler's imports (-X importtime, top level summed): "
        f"{handler_import_ms(bench):.1f} ms",
        "",
        "CPU per request, us (user + system over every round), of each process it passes:",
        "the service, Redis, the audit socket's reader (journald's stand-in) and the load",
        "client; what that lets two cores serve at most, against what was measured:",
        *cpu_rows,
    ]


def cpu_lines(
    shape: tuple[int, int], meters: dict[str, CpuMeter], measured: dict[str, float]
) -> list[str]:
    """One line per service: its CPU per request by role, and the rate two cores allow."""
    lines = []
    for name, meter in meters.items():
        spent = meter.microseconds_per_request()
        parts = [spent.get(role, 0.0) for role in ("service", "redis", "journal", "client")]
        total = sum(parts)
        at_most = 2e6 / total if total else 0.0
        label = f"{shape[0]}x{shape[1]}" if not lines else ""
        lines.append(
            f"  {label:<7} {name:<8} {parts[0]:5.1f} + {parts[1]:4.1f} + {parts[2]:4.1f} + "
            f"{parts[3]:4.1f} = {total:5.1f}   at most {at_most:6.0f}/s, "
            f"measured {measured[name]:6.0f}/s"
        )
    return lines


def variants(bench: Bench, count: int) -> list[str]:
    """connect -> first answer of other ways to start the same handler, against the floor.

    What the unit's ExecStart= was chosen from: the console script pip and
    pybuild generate, `python3 -I -m`, the `-c` line the units had before the
    launcher, and the shipped command without a cache directory (so the
    config's TOML is parsed on every start). The TCP row
    is 0.1.0's transport: loopback TCP to an open Redis, no login.
    """
    print(f"bench: start-up variants, {count} connections each ...", file=sys.stderr, flush=True)
    script = bench.directory / "pbs-activated"
    script.write_text(PIP_CONSOLE_SCRIPT)
    script.chmod(0o755)
    dash_m = IMPORT_AS_DASH_M.format(repo=str(REPO))
    tcp_cache = bench.directory / "tcp-cache"
    tcp_cache.mkdir()
    candidates = [
        ("floor: python3 -I -S, no imports", bench.floor(), FLOOR_ANSWER),
        ("shipped ExecStart=, config cache", bench.ours("v-shipped"), OUR_ANSWER),
        (
            "shipped ExecStart=, no cache directory",
            bench.ours("v-nocache", CACHE_DIRECTORY=""),
            OUR_ANSWER,
        ),
        (
            "shipped ExecStart=, config cache, loopback TCP, no login",
            bench.ours(
                "v-tcp",
                PBS_ACTIVATED_CONFIG=str(bench.tcp_config),
                CACHE_DIRECTORY=str(tcp_cache),
                PBS_ACTIVATED_STORE_USER="",
            ),
            OUR_ANSWER,
        ),
        (
            "former ExecStart=: python3 -I -S -c, config cache",
            bench.ours(
                "v-dash-c", [PYTHON, "-I", "-S", "-c", DASH_C.format(repo=str(REPO)), "policy"]
            ),
            OUR_ANSWER,
        ),
        (
            "python3 -I -m pbs_activated (site, runpy)",
            bench.ours("v-dash-m", [PYTHON, "-I", "-c", dash_m, "policy"]),
            OUR_ANSWER,
        ),
        (
            "console script /usr/bin/pbs-activated (site, re)",
            bench.ours("v-script", [str(script), "policy"], PYTHONPATH=str(REPO)),
            OUR_ANSWER,
        ),
    ]
    medians = first_answers([(service, expected) for _, service, expected in candidates], count)
    lines = ["", "start-up variants: connect -> first answer, median ms (ratio to the floor)"]
    for (name, _, _), value in zip(candidates, medians, strict=True):
        lines.append(f"  {name:<58} {value:6.2f}  {value / medians[0]:.2f}x")
    return lines


def tcp_throughput(bench: Bench, rounds: int) -> list[str]:
    """Steady throughput of our handler over loopback TCP with no login, vs the seed.

    For orientation beside the goals table, which measures the default transport
    (the package's store on its unix socket, with a login per connection): this
    is 0.1.0's, Debian's redis-server on 127.0.0.1:6379, which every local user
    could write to. The seed reaches Redis by TCP as its article says.
    """
    progress(f"steady throughput over loopback TCP, {rounds} rounds")
    assert bench.seed is not None
    cache = bench.directory / "tcp-steady-cache"
    cache.mkdir()
    tcp = bench.ours(
        "tcp-steady",
        PBS_ACTIVATED_CONFIG=str(bench.tcp_config),
        CACHE_DIRECTORY=str(cache),
        PBS_ACTIVATED_STORE_USER="",
    )
    lines = ["", "steady, our handler over loopback TCP without a login, vs the seed:"]
    for shape in ((16, 500), (1, 3000)):
        ratios = []
        for _ in range(rounds):
            ours = steady(tcp.path, OUR_ANSWER, *shape)
            tcp.wait_idle()
            ratios.append(ours / steady(bench.seed.path, SEED_ANSWER, *shape))
        lines.append(
            f"  {shape[0]} x {shape[1]}: {statistics.median(ratios):.2f}x "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
