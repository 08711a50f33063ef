"""`make bench-ab`: the handler's start-up at two git revisions, in one paired A/B run.

Why: a change that touches no decision can still make every Postfix connection
slower, since an interpreter starts for each one (a module moved into a
subpackage is one more `__init__` to find, read and run). The goal it checks:
start-up, 64 connections at once and RSS may not get worse beyond the noise of
a paired A/B run. `--a REV --b REV` compare two commits; B defaults to the
working tree as it is, A to HEAD~1.

How each side runs, the same for both:

- its tree is `git archive REV` (the working tree: git's view of it, tracked
  and new files, as `make deb` takes it) unpacked into a temporary directory
  and precompiled with `python3 -m compileall`, as the .deb's postinst does, so
  neither side pays compilation;
- its handler is its own tree's `pbs-policy@.service` ExecStart=, its own
  launcher (packaging/policy/policy) copied with one change, the same one
  tests/support.unit_command makes for `make bench`: the directory it appends
  to sys.path is that tree instead of /usr/lib/python3/dist-packages (the
  handler's path imports nothing from there; `make bench` runs it so too). The
  launcher's #! line (`python3 -IS`), its imports and its exit are the tree's;
- systemd-socket-activate --accept --inetd starts it on its own unix socket,
  with the same config file, one redis-server on a unix socket with the
  pbs-policy ACL user and the granted address, and one journald stand-in;
  each side has its own $CACHE_DIRECTORY, as each install has its own, so a
  side never reads the other's config cache (whose format may differ).

What is measured:

- connect -> first answer of one RCPT request on a fresh connection, `--starts`
  per side in one shuffled order of A and B labels (the seed is printed, and
  `--seed` replays the order), each start alone: the bench waits until the
  previous handler has exited. 10 unmeasured starts per side come first. The
  i-th A start is paired with the i-th B start; the report gives each side's
  median and their ratio B/A, and the paired differences B - A: their median
  with its 95% interval, their mean +- standard error, the median of the
  pairs' ratios. B starts slower than A beyond the noise when the median
  difference's interval lies above zero;
- 64 new connections at once, all answered: `--storms` pairs of storms, the
  order within each pair drawn at random; each side's median and the median of
  the pairs' ratios B/A;
- with `--rss` (`make bench-ab` passes it): the VmRSS of handlers each holding
  an answered connection (bench/run.py's handler_rss_kib), 8 per side, in 3
  alternating rounds; the median of the 24 per side.

Run with Debian's /usr/bin/python3, as root or not. A measurement, not a test:
it exits 0 whatever the figures say, and non-zero only if it could not measure.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # support.py

from load import first_answer_times, storm  # noqa: E402
from run import OUR_ANSWER, handler_rss_kib  # noqa: E402
from servers import GRANTED_ADDRESS, ActivatedService, AuditSink, start_redis  # noqa: E402
from support import PYTHON, REPO, RedisServer, unit_command  # noqa: E402

UNIT = "pbs-policy@.service"
WORKING_TREE = "working tree"
"""The label of `--b`'s default: the checkout as it is, uncommitted changes included."""

WARM_UP_STARTS = 10
"""Unmeasured starts per side first, so both trees are in the page cache alike."""

STORM_SIZE = 64
RSS_HANDLERS = 8
RSS_ROUNDS = 3

GRANTED_KEY = "pbs:client:" + GRANTED_ADDRESS
"""The store's key of the granted address (pbs_activated/keys.py). Written out, not
imported: the key schema is what the store keeps across upgrades, while the module
that names it may move between the two revisions. A side that looks elsewhere
answers otherwise, and the bench stops on the wrong answer."""

POLICY_USER = "pbs-policy"
POLICY_RULES = ("~pbs:client:*", "+get", "+mget", "+ping", "+select")
"""pbs_activated/acl.py's RULES for the handler's store user, written out for the
same reason: the login per connection is part of every start, so it is measured."""


@dataclass
class Side:
    """One revision under test: its tree, its handler and what was measured of it."""

    label: str
    revision: str
    """What was asked for (`--a`/`--b`), or WORKING_TREE."""
    commit: str
    tree: Path
    service: ActivatedService | None = None
    starts: list[float] = field(default_factory=list)
    storms: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)

    @property
    def running(self) -> ActivatedService:
        assert self.service is not None, "started by Store.serve"
        return self.service


def git(*arguments: str) -> str:
    """Run git in this checkout; return its output, stripped."""
    return subprocess.run(
        ["git", "-C", str(REPO), *arguments], check=True, capture_output=True, text=True
    ).stdout.strip()


def describe(revision: str | None) -> str:
    """The short commit of a revision, or of HEAD with '+changes' for a dirty working tree."""
    if revision is not None:
        return git("rev-parse", "--short", "--verify", f"{revision}^{{commit}}")
    dirty = git("status", "--porcelain", "--untracked-files=normal")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def unpack(revision: str | None, tree: Path) -> None:
    """Write a revision's tree (None: the working tree as it is) into `tree`, precompiled.

    The working tree is taken as `make deb` takes it (tracked and new files, not
    ignored ones, so no stale __pycache__); compileall then writes the .pyc files
    every installed copy has from its postinst, for both sides alike.
    """
    tree.mkdir()
    if revision is None:
        files = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
        packed = subprocess.run(
            ["tar", "--null", "--ignore-failed-read", "-T", "-", "-cf", "-"],
            input=files.encode(),
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
    else:
        packed = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", revision],
            check=True,
            capture_output=True,
        ).stdout
    subprocess.run(["tar", "-xf", "-", "-C", str(tree)], input=packed, check=True)
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "pbs_activated")], check=True)


class Store:
    """The redis-server, journald's stand-in and config file both sides share."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis: RedisServer = start_redis(self._make("redis"))
        self.redis.command("SET", GRANTED_KEY, "alice")
        password = "bench-policy-secret"
        self.redis.command(
            "ACL", "SETUSER", POLICY_USER, "reset", "on", f">{password}",
            "resetchannels", "-@all", *POLICY_RULES,
        )  # fmt: skip
        self.secret = self._make("secrets") / POLICY_USER
        self.secret.write_text(password + "\n")
        self.sink = AuditSink(directory / "journal.sock")
        self.config = directory / "pbs-activated.toml"
        self.config.write_text(f'[redis]\nurl = "{self.redis.url}"\ncredentials = "component"\n')

    def _make(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir()
        return path

    def serve(self, side: Side) -> None:
        """Start a side's handler behind its own listener, environment as the unit sets it."""
        environment = {
            "PBS_ACTIVATED_CONFIG": str(self.config),
            "PBS_ACTIVATED_JOURNAL_SOCKET": str(self.sink.path),
            "CACHE_DIRECTORY": str(self._make(f"cache-{side.label}")),
            "PBS_ACTIVATED_STORE_USER": POLICY_USER,
            "PBS_ACTIVATED_STORE_PASSWORD_FILE": str(self.secret),
        }
        socket_path = self.directory / f"{side.label}.sock"
        side.service = ActivatedService(
            socket_path, unit_command(UNIT, side.tree, side.tree), environment
        )

    def stop(self, sides: list[Side]) -> int:
        """Stop everything; return how many audit entries the handlers sent."""
        for side in sides:
            if side.service is not None:
                side.service.stop()
        entries = self.sink.stop()
        self.redis.stop()
        return entries


def one_start(side: Side) -> float:
    """Seconds from connect to first answer of one fresh handler, then wait for its exit."""
    seconds = first_answer_times(side.running.path, OUR_ANSWER, 1)[0]
    if not side.running.wait_idle():
        raise RuntimeError(f"{side.label}: a handler still runs 10 s after its connection closed")
    return seconds


def measure_starts(sides: list[Side], starts: int, rng: random.Random) -> None:
    """`starts` first answers per side in one shuffled order, each start alone.

    One order for both sides, not A then B, so drift in the machine's speed
    (another tenant, the CPU's clock) falls on both alike.
    """
    for side in sides:
        for _ in range(WARM_UP_STARTS):
            one_start(side)
    order = [side for side in sides for _ in range(starts)]
    rng.shuffle(order)
    for side in order:
        side.starts.append(one_start(side))


def measure_storms(sides: list[Side], rounds: int, rng: random.Random) -> None:
    """`rounds` pairs of 64 connections at once, which side goes first drawn per pair."""
    for _ in range(rounds):
        pair = sides if rng.random() < 0.5 else sides[::-1]
        for side in pair:
            side.storms.append(storm(side.running.path, OUR_ANSWER, STORM_SIZE))
            side.running.wait_idle()


def measure_rss(sides: list[Side]) -> None:
    """VmRSS (KiB) of handlers holding an answered connection, the sides taking turns."""
    for _ in range(RSS_ROUNDS):
        for side in sides:
            side.rss.append(handler_rss_kib(side.running, OUR_ANSWER, RSS_HANDLERS))


def paired_summary(a: list[float], b: list[float]) -> dict[str, float]:
    """Medians of each side (ms), the paired differences B - A (ms) and the ratios B/A.

    The ratio of the medians moves with the load on the machine between the two
    sides' starts; the pairs' differences and ratios are what the pairing steadies.

    The standard error is the differences' standard deviation over sqrt(n): the
    mean difference is noise when it lies within about two of them of zero.
    """
    differences = [(y - x) * 1000 for x, y in zip(a, b, strict=True)]
    low, high = median_interval(differences)
    median_a, median_b = statistics.median(a) * 1000, statistics.median(b) * 1000
    return {
        "median_a_ms": median_a,
        "median_b_ms": median_b,
        "ratio": median_b / median_a,
        "difference_median_ms": statistics.median(differences),
        "difference_median_low_ms": low,
        "difference_median_high_ms": high,
        "difference_mean_ms": statistics.fmean(differences),
        "difference_se_ms": statistics.stdev(differences) / math.sqrt(len(differences)),
        "pairs_ratio": statistics.median(y / x for x, y in zip(a, b, strict=True)),
    }


def median_interval(values: list[float]) -> tuple[float, float]:
    """A 95% confidence interval of the median, from order statistics (the sign test's).

    Free of any assumption about the distribution: start-up times have a long
    tail (a start that meets another process's burst), which widens the mean's
    standard error far more than it moves the median.
    """
    ordered = sorted(values)
    below = max(0, math.floor(len(ordered) / 2 - 0.98 * math.sqrt(len(ordered))))
    return ordered[below], ordered[len(ordered) - 1 - below]


def storm_summary(a: list[float], b: list[float]) -> dict[str, float]:
    """Each side's median storm (ms) and the median of the pairs' ratios B/A."""
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return {
        "median_a_ms": statistics.median(a) * 1000,
        "median_b_ms": statistics.median(b) * 1000,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def rss_summary(a: list[float], b: list[float]) -> dict[str, float]:
    """Each side's median VmRSS (KiB) and their ratio B/A."""
    median_a, median_b = statistics.median(a), statistics.median(b)
    return {"median_a_kib": median_a, "median_b_kib": median_b, "ratio": median_b / median_a}


def report_lines(report: dict[str, Any]) -> list[str]:
    """The compact table a person reads."""
    a, b, first = report["a"], report["b"], report["first_answer"]
    lines = [
        f"A = {a['revision']} ({a['commit']})   B = {b['revision']} ({b['commit']})",
        f"seed {report['seed']}, {report['starts']} starts per side, "
        f"{report['storm_rounds']} storm pairs, {report['seconds']:.0f} s",
        "",
        f"{'figure':<44} {'A':>9} {'B':>9} {'B/A':>7}",
        "-" * 72,
        row("connect -> first answer, median ms", first["median_a_ms"], first["median_b_ms"], 2),
        f"  paired B - A, ms: median {first['difference_median_ms']:+.3f} "
        f"(95% {first['difference_median_low_ms']:+.3f} to "
        f"{first['difference_median_high_ms']:+.3f}), "
        f"mean {first['difference_mean_ms']:+.3f} +- {first['difference_se_ms']:.3f} (SE)",
        f"  median of the pairs' ratios B/A {first['pairs_ratio']:.3f}",
    ]
    if "storm" in report:
        storms = report["storm"]
        name = f"{STORM_SIZE} connections at once, median ms"
        lines.append(row(name, storms["median_a_ms"], storms["median_b_ms"], 1))
        lines.append(
            f"  median of the pairs' ratios B/A {storms['ratio']:.3f} "
            f"(pairs {storms['ratio_min']:.2f} to {storms['ratio_max']:.2f})"
        )
    if "rss" in report:
        rss = report["rss"]
        name = f"RSS per handler, median of {RSS_ROUNDS * RSS_HANDLERS}, KiB"
        lines.append(row(name, rss["median_a_kib"], rss["median_b_kib"], 0))
    lines.append(f"audit entries received: {report['audit_entries']}")
    return lines


def row(name: str, a: float, b: float, decimals: int) -> str:
    """One figure's line: A, B and B/A."""
    return f"{name:<44} {a:>9.{decimals}f} {b:>9.{decimals}f} {b / a:>7.3f}"


def progress(text: str) -> None:
    print(f"bench-ab: {text} ...", file=sys.stderr, flush=True)


def run(options: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Unpack both revisions, measure them against one store; return the report."""
    started = time.monotonic()
    revisions = {"A": options.a, "B": options.b}
    sides = []
    for label, revision in revisions.items():
        progress(f"{label}: unpacking and compiling {revision or WORKING_TREE}")
        tree = directory / f"tree-{label}"
        unpack(revision, tree)
        sides.append(Side(label, revision or WORKING_TREE, describe(revision), tree))
    store = Store(directory)
    try:
        for side in sides:
            store.serve(side)
        rng = random.Random(options.seed)
        progress(f"connect -> first answer, {options.starts} starts per side, shuffled")
        measure_starts(sides, options.starts, rng)
        if options.storms:
            progress(f"{STORM_SIZE} connections at once, {options.storms} pairs")
            measure_storms(sides, options.storms, rng)
        if options.rss:
            progress("resident memory of handlers holding a connection")
            measure_rss(sides)
    finally:
        entries = store.stop(sides)
    a, b = sides
    report: dict[str, Any] = {
        "a": {"revision": a.revision, "commit": a.commit},
        "b": {"revision": b.revision, "commit": b.commit},
        "seed": options.seed,
        "starts": options.starts,
        "storm_rounds": options.storms,
        "first_answer": paired_summary(a.starts, b.starts),
        "audit_entries": entries,
        "samples_ms": {
            side.label: {
                "starts": [s * 1000 for s in side.starts],
                "storms": [s * 1000 for s in side.storms],
            }
            for side in sides
        },
    }
    if options.storms:
        report["storm"] = storm_summary(a.storms, b.storms)
    if options.rss:
        report["rss"] = rss_summary(a.rss, b.rss)
    report["seconds"] = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="HEAD~1", metavar="REV", help="default: HEAD~1")
    parser.add_argument(
        "--b", default=None, metavar="REV", help="default: the working tree as it is"
    )
    parser.add_argument("--starts", type=int, default=600, help="first answers per side")
    parser.add_argument("--storms", type=int, default=15, help="pairs of 64 at once (0: none)")
    parser.add_argument("--rss", action="store_true", help="also the handlers' resident memory")
    parser.add_argument("--seed", type=int, default=None, help="the shuffle's (default: drawn)")
    parser.add_argument("--json", action="store_true", help="the report as JSON, samples included")
    options = parser.parse_args()
    if options.starts < 2:
        parser.error("--starts must be at least 2 (a standard error needs two pairs)")
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(2**32)
    progress(f"seed {options.seed}")
    with tempfile.TemporaryDirectory(prefix="pbs-bench-ab-") as temporary:
        report = run(options, Path(temporary))
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
