"""`make bench-booted-ab`: the handler's start at two revisions, through systemd's unit,
in booted Debian 12 and 13, in one paired A/B run.

Why: bench/startup_ab.py compares two revisions' start-up under
systemd-socket-activate, without the unit's sandbox. A figure about the handler
counts only when taken the way a site runs it: the installed unit started by
systemd in a booted Debian. So this boots each release with the system tests'
machinery (as bench/booted_units.py does), apt-installs the working tree's .deb
and serves both sides from the same systemd, store and config file:

- B, the working tree: the installed package, reached as Postfix reaches it,
  through pbs-policy.socket (/var/spool/postfix/private/pbs-policy) and the
  installed pbs-policy@.service;
- A, `--a REV` (default 953cf05, the last commit before the subpackages): its
  `pbs_activated/` from `git archive REV` in /usr/local/lib/pbs-ab-a/,
  precompiled there by the container's python3 (`-m compileall`, as py3compile
  does for B at installation), and its own launcher (packaging/policy/policy)
  copied with one change: the directory it adds to sys.path is
  /usr/local/lib/pbs-ab-a instead of /usr/lib/python3/dist-packages, at the
  place that launcher puts it (as tests/support.unit_command and
  bench/startup_ab.py change the launcher, and debian/preinst for an upgrade).
  pbs-ab-a.socket (Accept=yes, its own path, pbs-policy.socket's limits) starts
  pbs-ab-a@.service, a copy of the INSTALLED pbs-policy@.service with two lines
  changed: ExecStart= (A's launcher) and CacheDirectory=pbs-ab-a.

The cache directory: CacheDirectory=pbs-policy holds the parsed config (marshal),
whose format may differ between the revisions; a shared one would have each side
read, reject and rewrite the other's. With DynamicUser= and no User=, systemd names
each template's user after it (pbs-policy, pbs-ab-a), so each side has its own user
owning its own cache, as one install has: symmetric without touching B's unit.
(booted_units.py's copies set User=pbs-policy to share B's cache instead.)

What stays asymmetric by default is the path to each side: B's socket unit and
name (pbs-policy, Postfix's spool) against A's (pbs-ab-a, /run). An A/A run
(`--a HEAD`) shows what that costs: PID 1 spent ~0.05-0.1 ms less per start on
B on both releases. `--symmetric` serves B through pbs-ab-b.socket and
pbs-ab-b@.service instead, made exactly as A's (the installed unit with
CacheDirectory=pbs-ab-b, ExecStart= unchanged), so that the two sides differ in
the package alone.

Both sides see the same request: an RCPT from 192.0.2.10, which `pbs-activated
grant` authorizes beforehand, without `policy_context` (so no side ever waits for
a login); both must answer `action=OK`, or the run stops. Each side holds one
answered connection throughout (bench/booted_ab_driver.py says why).

What is measured (bench/booted_ab_driver.py, from inside the container): 20
unmeasured starts per side, then `--starts` per side in one shuffled order of A
and B (seeded; `--seed` replays it), each alone: the next connection comes once
the previous instance's cgroup is gone. Per start: connect -> first answer, and
the CPU of the side's slice (its instance, systemd-executor on systemd 255+), of
PID 1 and of journald. The i-th A start is paired with the i-th B start; the
report gives each side's median, B/A, and the paired differences B - A: their
median with a 95% interval (order statistics, startup_ab.median_interval), their
mean +- SE. B is worse beyond the noise when the median's interval lies above 0.
The interval takes the pairs as independent; an A/A run (`--a HEAD`) is the check
of what the harness itself can resolve: on a 2-core host with other work on it,
its slice CPU differences came out between -0.18 and +0.08 ms, its connect ->
answer medians within +-0.9 ms, one of each "beyond noise".

    /work/cgrun /usr/bin/python3 bench/booted_ab.py [--a REV] [--releases bookworm,trixie]
        [--starts 600] [--seed N] [--symmetric] [--json]

A measurement, not a test: it exits 0 whatever the figures say.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from booted_units import FLOOR_SOCKET, FLOOR_SOCKET_PATH, REPO, product_container  # noqa: E402
from container import Container  # noqa: E402
from product import build_deb  # noqa: E402
from startup_ab import describe, paired_summary  # noqa: E402
from support import INSTALLED_PACKAGES, encode_request  # noqa: E402

A_DIRECTORY = "/usr/local/lib/pbs-ab-a"
INSTALLED_UNIT = "/usr/lib/systemd/system/pbs-policy@.service"
DRIVER_DIRECTORY = "/usr/local/lib/pbs-bench"
GRANTED_ADDRESS = "192.0.2.10"
"""POSTFIX_RCPT_REQUEST's client address (tests/support.py)."""
REQUEST = encode_request(client_address=GRANTED_ADDRESS, policy_context="")
ANSWER = "action=OK\n\n"
WARM_UP_STARTS = 20
"""Unmeasured starts per side first: both trees in the page cache, both caches written."""

SHIPPED = {
    "socket": "/var/spool/postfix/private/pbs-policy",
    "slice": "system.slice/system-pbs\\x2dpolicy.slice",
}
"""B as a site has it: pbs-policy.socket and the installed pbs-policy@.service."""


def copied(name: str) -> dict[str, str]:
    """Where the driver finds a side served by a unit copy: its socket and its slice."""
    escaped = name.replace("-", "\\x2d")
    return {"socket": f"/run/{name}.sock", "slice": f"system.slice/system-{escaped}.slice"}


def a_launcher(source: str) -> str:
    """The launcher of A's tree, adding A's directory where it adds dist-packages.

    A launcher that does not name dist-packages exactly once is an error, never a
    silent measurement of some other import path.
    """
    if source.count(f'"{INSTALLED_PACKAGES}"') != 1:
        raise RuntimeError(f"A's launcher does not add {INSTALLED_PACKAGES} once")
    return source.replace(f'"{INSTALLED_PACKAGES}"', f'"{A_DIRECTORY}"')


def unit_copy(installed: str, changed: dict[str, str]) -> str:
    """The installed pbs-policy@.service with the `changed` keys' lines replaced."""
    lines, seen = [], []
    for line in installed.splitlines():
        key = line.split("=", 1)[0]
        if key in changed:
            seen.append(key)
            line = changed[key]
        lines.append(line)
    if sorted(seen) != sorted(changed):
        raise RuntimeError(f"{INSTALLED_UNIT}: expected one each of {sorted(changed)}: {seen}")
    return "\n".join(lines) + "\n"


def unpack(revision: str, directory: Path) -> None:
    """`git archive`'s pbs_activated/ and launcher of a revision, into `directory`."""
    packed = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "pbs_activated",
         "packaging/policy/policy"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-xf", "-", "-C", str(directory)], input=packed, check=True)


def serve_copy(ct: Container, name: str, changed: dict[str, str]) -> dict[str, str]:
    """An Accept=yes name.socket starting name@.service, the installed unit with `changed`
    and its own CacheDirectory=name; where the driver finds it."""
    changed = {**changed, "CacheDirectory": f"CacheDirectory={name}"}
    # The floor's socket of booted_units.py (pbs-policy.socket's limits) at its own path.
    socket_unit = FLOOR_SOCKET.replace(FLOOR_SOCKET_PATH, copied(name)["socket"])
    ct.write_file(f"/etc/systemd/system/{name}.socket", socket_unit)
    service = unit_copy(ct.read_file(INSTALLED_UNIT), changed)
    ct.write_file(f"/etc/systemd/system/{name}@.service", service)
    ct.systemctl("daemon-reload")
    ct.systemctl("start", f"{name}.socket")
    return copied(name)


def install_a(ct: Container, revision: str) -> dict[str, str]:
    """Side A in the container: its package, precompiled, its launcher and its units."""
    with tempfile.TemporaryDirectory(prefix="pbs-booted-ab-") as temporary:
        tree = Path(temporary)
        unpack(revision, tree)
        ct.copy_in(tree / "pbs_activated", f"{A_DIRECTORY}/pbs_activated")
        launcher = a_launcher((tree / "packaging" / "policy" / "policy").read_text())
    ct.write_file(f"{A_DIRECTORY}/policy", launcher, mode=0o755)
    ct.run(["/usr/bin/python3", "-m", "compileall", "-q", f"{A_DIRECTORY}/pbs_activated"])
    return serve_copy(ct, "pbs-ab-a", {"ExecStart": f"ExecStart={A_DIRECTORY}/policy policy"})


def drive(
    ct: Container, sides: dict[str, dict[str, str]], order: list[str]
) -> dict[str, list[dict[str, float]]]:
    """Run bench/booted_ab_driver.py inside: the measured starts of each side, in order."""
    for name in ("booted_driver.py", "booted_ab_driver.py"):
        ct.copy_in(REPO / "bench" / name, f"{DRIVER_DIRECTORY}/{name}")
    spec = {
        "sides": sides,
        "request": REQUEST.decode(),
        "answer": ANSWER,
        "warm_up": WARM_UP_STARTS,
        "order": order,
    }
    driver = f"{DRIVER_DIRECTORY}/booted_ab_driver.py"
    result = ct.run(["python3", "-I", driver], input=json.dumps(spec), timeout=7200)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def measure_release(release: str, deb: Path, options: argparse.Namespace) -> dict[str, Any]:
    """Boot `release`, install both sides, run the shuffled starts; the release's report."""
    load_before = os.getloadavg()
    with product_container(release, deb) as ct:
        sides = {"A": install_a(ct, options.a)}
        sides["B"] = serve_copy(ct, "pbs-ab-b", {}) if options.symmetric else SHIPPED
        ct.run(["pbs-activated", "grant", GRANTED_ADDRESS, "--user", "bench"])
        systemd = ct.run(["systemctl", "--version"]).stdout.split("\n")[0]
        python = ct.run(["/usr/bin/python3", "--version"]).stdout.strip()
        order = [label for label in sides for _ in range(options.starts)]
        random.Random(options.seed).shuffle(order)
        started = time.monotonic()
        starts = drive(ct, sides, order)
        seconds = time.monotonic() - started
    return {
        "release": release,
        "systemd": systemd,
        "python": python,
        "seconds": seconds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "samples": starts,
    }


def figures(samples: dict[str, list[dict[str, float]]], key: str) -> dict[str, float]:
    """startup_ab.paired_summary of one per-start figure (ms), the i-th A with the i-th B."""
    a = [start[key] / 1000 for start in samples["A"]]
    b = [start[key] / 1000 for start in samples["B"]]
    return paired_summary(a, b)


def verdict(summary: dict[str, float]) -> str:
    """Where the paired median difference's 95% interval lies."""
    if summary["difference_median_low_ms"] > 0:
        return "B worse beyond noise"
    if summary["difference_median_high_ms"] < 0:
        return "B better beyond noise"
    return "within noise"


def release_lines(report: dict[str, Any], options: argparse.Namespace) -> list[str]:
    """The table a person reads, for one release."""
    samples = report["samples"]
    lines = [
        f"\n## {report['release']} ({report['systemd']}, {report['python']})",
        f"A = {options.a} ({describe(options.a)}) via pbs-ab-a.socket; "
        f"B = working tree ({describe(None)}) as the installed .deb via "
        f"{'pbs-ab-b.socket' if options.symmetric else 'pbs-policy.socket'}",
        f"seed {options.seed}, {options.starts} starts per side after {WARM_UP_STARTS} warm-up,"
        f" {report['seconds']:.0f} s; load average before "
        f"{' '.join(f'{x:.2f}' for x in report['load_before'])}, after "
        f"{' '.join(f'{x:.2f}' for x in report['load_after'])}",
        "",
        f"{'figure (median ms)':<36} {'A':>8} {'B':>8} {'B/A':>6}  paired B - A, ms",
    ]
    for name, key in (
        ("connect -> first answer", "answer_ms"),
        ("CPU, the side's slice", "unit_ms"),
        ("CPU, PID 1", "pid1_ms"),
        ("CPU, journald", "journald_ms"),
    ):
        summary = figures(samples, key)
        lines.append(
            f"{name:<36} {summary['median_a_ms']:>8.3f} {summary['median_b_ms']:>8.3f}"
            f" {summary['ratio']:>6.3f}  median {summary['difference_median_ms']:+.3f}"
            f" (95% {summary['difference_median_low_ms']:+.3f} to"
            f" {summary['difference_median_high_ms']:+.3f}),"
            f" mean {summary['difference_mean_ms']:+.3f} +- {summary['difference_se_ms']:.3f}"
            f" SE: {verdict(summary)}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="953cf05", metavar="REV", help="default: 953cf05")
    parser.add_argument("--releases", default="bookworm,trixie")
    parser.add_argument("--starts", type=int, default=600, help="measured starts per side")
    parser.add_argument("--seed", type=int, default=None, help="the shuffle's (default: drawn)")
    parser.add_argument(
        "--symmetric",
        action="store_true",
        help="B through pbs-ab-b.socket, a copy like A's, not pbs-policy.socket",
    )
    parser.add_argument("--json", action="store_true", help="also the samples, as JSON")
    options = parser.parse_args()
    if options.starts < 2:
        parser.error("--starts must be at least 2 (a standard error needs two pairs)")
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(2**32)
    print(f"booted-ab: seed {options.seed}", file=sys.stderr, flush=True)
    deb = build_deb()
    reports = []
    for release in options.releases.split(","):
        report = measure_release(release, deb, options)
        reports.append(report)
        print("\n".join(release_lines(report, options)), flush=True)
    if options.json:
        print(json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
