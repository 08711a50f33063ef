"""What a Postfix connection costs through the installed units, on booted Debian 12 and 13.

`make bench` measures the handler under systemd-socket-activate, without its unit's
sandbox; the handler Postfix meets is started by systemd through
`pbs-policy@.service`, whose sandbox is built at every start (issue #23). So this
boots each release with the system tests' machinery (tests/system/container.py,
product.py), apt-installs the .deb and connects, as Postfix does, to:

- `floor`: an Accept=yes socket of the bench's own whose service is a bare
  `python3 -I -S` answering DUNNO (bench/floor.py), no sandbox, same systemd:
  what any per-connection service costs there;
- `handler`: pbs-policy.socket, the package's default (pbs-policy@.service);
- `server`: pbs-policy-server.socket (Accept=no), each start a cold one (the
  server is stopped after every answer), plus a warm connection to it.

Batches of sequential starts alternate between the units within one run (the
order reversed every round) and each figure is a ratio to the floor measured in
the same run; bench/booted_driver.py, run inside, says where each counter comes
from. CPU per start is the unit's cgroup + PID 1 + journald; connect -> answer is
from connect() to the last byte of the first answer.

    /usr/bin/python3 bench/booted_units.py [--releases bookworm,trixie] [--count 40]
        [--rounds 5] [--held 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "system")]

from container import TARGETS, Container  # noqa: E402
from mailhost import configure_mail_host  # noqa: E402
from product import build_deb, install_product, use_policy_socket  # noqa: E402
from support import encode_request  # noqa: E402

DRIVER = "/usr/local/lib/pbs-bench-driver.py"
FLOOR_SCRIPT = "/usr/local/lib/pbs-floor.py"
FLOOR_SOCKET_PATH = "/run/pbs-floor.sock"
POLICY_SOCKET_PATH = "/var/spool/postfix/private/pbs-policy"

FLOOR_SOCKET = f"""\
[Socket]
ListenStream={FLOOR_SOCKET_PATH}
Accept=yes
# The same limits as pbs-policy.socket, so that neither unit is held back.
MaxConnections=512
TriggerLimitIntervalSec=1s
TriggerLimitBurst=5000
PollLimitIntervalSec=1s
PollLimitBurst=1250
"""
FLOOR_SERVICE = f"""\
[Unit]
CollectMode=inactive-or-failed

[Service]
ExecStart=/usr/bin/python3 -I -S {FLOOR_SCRIPT}
StandardInput=socket
StandardOutput=socket
StandardError=journal
"""
FLOOR = {"socket": FLOOR_SOCKET_PATH, "slice": "system.slice/system-pbs\\x2dfloor.slice"}
HANDLER = {"socket": POLICY_SOCKET_PATH, "slice": "system.slice/system-pbs\\x2dpolicy.slice"}
SERVER = {"socket": POLICY_SOCKET_PATH, "group": "system.slice/pbs-policy-server.service"}
KERNEL_MOUNTS = (
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
)
"""Four directives that each add read-only or inaccessible mounts to every start; no
longer in the shipped unit (see its comment), so a variant adds them back."""
SECCOMP_PROTECTIONS = (
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
)
SYSCALL_FILTER = ("SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures")
STATIC_USER = "pbs-policy-static"
"""A static system user for the variants without DynamicUser=. Not `pbs-policy`: with
a static user of that name the shipped unit's DynamicUser= would take it too."""
STATIC = (
    ("DynamicUser", "CacheDirectory"),
    (f"User={STATIC_USER}", "CacheDirectory=pbs-policy-static"),
)
"""Without DynamicUser=: a static user; what DynamicUser= implies (ProtectSystem=strict,
ProtectHome=read-only, PrivateTmp, RemoveIPC, NoNewPrivileges, RestrictSUIDSGID)
the unit sets explicitly already, unless a variant removes it too."""
SINGLES = (
    "PrivateUsers",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "PrivateTmp",
    "ProtectHome",
)
CANDIDATE = (("PrivateUsers", *STATIC[0]), STATIC[1])
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "shipped": ((), ()),
    "0.3.0's, with the kernel mounts": ((), tuple(f"{key}=yes" for key in KERNEL_MOUNTS)),
    **{f"no {key}": ((key,), ()) for key in SINGLES},
    "no SystemCallFilter": (SYSCALL_FILTER, ()),
    "no ProtectProc": (("ProtectProc", "ProcSubset"), ()),
    "no Restrict*": (SECCOMP_PROTECTIONS, ()),
    "static user": STATIC,
    "static, no PrivateUsers": CANDIDATE,
    "static, no PrivateUsers, PrivateDevices": ((*CANDIDATE[0], "PrivateDevices"), CANDIDATE[1]),
    "static, no PrivateUsers, PrivateDevices, ProtectClock": (
        (*CANDIDATE[0], "PrivateDevices", "ProtectClock"),
        CANDIDATE[1],
    ),
    "no sandbox": (
        (
            *SINGLES,
            *SYSCALL_FILTER,
            *SECCOMP_PROTECTIONS,
            *STATIC[0],
            "ProtectSystem",
            "ProtectProc",
            "ProcSubset",
            "PrivateMounts",
            "NoNewPrivileges",
            "CapabilityBoundingSet",
            "RestrictAddressFamilies",
            "RemoveIPC",
        ),
        STATIC[1],
    ),
}
"""The handler's unit with directives removed (keys) and lines added: name -> (keys, lines)."""

REQUEST = encode_request(client_address="192.0.2.200", client_name="unknown")
"""A relay attempt from an address with no authorization: the handler asks the store."""


def install_floor(ct: Container) -> None:
    ct.copy_in(REPO / "bench" / "floor.py", FLOOR_SCRIPT)
    ct.write_file("/etc/systemd/system/pbs-floor.socket", FLOOR_SOCKET)
    ct.write_file("/etc/systemd/system/pbs-floor@.service", FLOOR_SERVICE)
    ct.systemctl("daemon-reload")
    ct.systemctl("start", "pbs-floor.socket")


def variant_text(removed: tuple[str, ...], added: tuple[str, ...]) -> str:
    """units/pbs-policy@.service without the keys removed, with the lines added, and
    User=pbs-policy: the dynamic user systemd names after the shipped template, so
    that every copy shares its cache (a copy's own name would chown it at each start)."""
    kept = [
        line
        for line in (REPO / "units" / "pbs-policy@.service").read_text().splitlines()
        if line.split("=", 1)[0] not in removed
    ]
    user = [] if any(line.startswith("User=") for line in added) else ["User=pbs-policy"]
    return "\n".join([*kept, *user, *added]) + "\n"


def slug(variant: str) -> str:
    """A variant's name as a unit name: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")


def install_variants(ct: Container) -> dict[str, dict[str, str]]:
    """Each VARIANTS entry as an Accept=yes socket of its own and its unit copy."""
    ct.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--groups",
            "pbs-activated",
            STATIC_USER,
        ]
    )
    units = {}
    for name, (removed, added) in VARIANTS.items():
        name = slug(name)
        path = f"/run/pbs-v-{name}.sock"
        ct.write_file(
            f"/etc/systemd/system/pbs-v-{name}.socket",
            FLOOR_SOCKET.replace(FLOOR_SOCKET_PATH, path),
        )
        ct.write_file(f"/etc/systemd/system/pbs-v-{name}@.service", variant_text(removed, added))
        escaped = f"pbs-v-{name}".replace("-", "\\x2d")
        units[name] = {"socket": path, "slice": f"system.slice/system-{escaped}.slice"}
    ct.systemctl("daemon-reload")
    ct.systemctl("start", *(f"pbs-v-{name}.socket" for name in units))
    return units


def exposure(ct: Container, name: str) -> str:
    """systemd-analyze security --offline's overall exposure of a variant's unit file."""
    out = ct.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            f"/etc/systemd/system/pbs-v-{name}@.service",
        ],
        check=False,
    ).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    return match.group(1) if match else "?"


def directive_table(release: str, systemd: str, run: Any, exposures: dict[str, str]) -> list[str]:
    """Per variant: CPU per start and connect -> answer, medians (range) and x floor."""
    rounds = run["rounds"]
    lines = [f"\n## {release} ({systemd}): the handler's directives, {len(rounds)} rounds"]
    lines.append(
        "| variant | change | CPU/start ms | x floor | connect->answer ms | x floor | exposure |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for name in rounds[0]:
        cpu = [sum(r[name]["cpu_ms"].values()) for r in rounds]
        answer = [statistics.median(r[name]["answer_ms"]) for r in rounds]
        floor_cpu = [sum(r["floor"]["cpu_ms"].values()) for r in rounds]
        floor_answer = [statistics.median(r["floor"]["answer_ms"]) for r in rounds]
        cpu_ratio = [c / f for c, f in zip(cpu, floor_cpu, strict=True)]
        answer_ratio = [a / f for a, f in zip(answer, floor_answer, strict=True)]
        label = next((variant for variant in VARIANTS if slug(variant) == name), name)
        removed, added = VARIANTS.get(label, ((), ()))
        change = " ".join([*(f"-{key}" for key in removed), *(f"+{line}" for line in added)])
        lines.append(
            f"| {label} | {change} | {spread(cpu)} | {statistics.median(cpu_ratio):.2f}"
            f" | {spread(answer)} | {statistics.median(answer_ratio):.2f}"
            f" | {exposures.get(name, '')} |"
        )
    return lines


def drive(ct: Container, units: dict[str, dict[str, str]], args: argparse.Namespace) -> Any:
    spec = {
        "units": units,
        "request": REQUEST.decode(),
        "count": args.count,
        "rounds": args.rounds,
        "held": args.held,
    }
    result = ct.run(["python3", "-I", DRIVER], input=json.dumps(spec), timeout=3600)
    return json.loads(result.stdout)


def spread(values: list[float], digits: int = 1) -> str:
    """Median and the range of the rounds' values."""
    low, median, high = min(values), statistics.median(values), max(values)
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


@contextlib.contextmanager
def product_container(release: str, deb: Path) -> Iterator[Container]:
    """A booted Debian `release` with the store on Redis, the mail host configured
    as for the system tests and the .deb installed."""
    with Container(TARGETS[f"{release}+redis"]) as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        yield ct


def each_release(
    args: argparse.Namespace, bench: Callable[[str, Path, argparse.Namespace], list[str]]
) -> int:
    """Build the .deb, run `bench` on each release of --releases, print its lines."""
    deb = build_deb()
    for release in args.releases.split(","):
        print("\n".join(bench(release, deb, args)), flush=True)
    return 0


def report(release: str, systemd: str, runs: list[Any]) -> list[str]:
    """One table for the release: per unit, median over rounds (range), ratio to the floor."""
    rounds = [batch for run in runs for batch in run["rounds"]]
    lines = [f"\n## {release} ({systemd}): {len(rounds)} rounds"]
    lines.append(
        "| unit | CPU/start ms (unit+PID1+journald) | unit | PID 1 | journald"
        " | x floor | connect->answer ms | x floor |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")

    def cpu(batch: dict[str, Any]) -> float:
        return float(sum(batch["cpu_ms"].values()))

    def answer(batch: dict[str, Any]) -> float:
        return float(statistics.median(batch["answer_ms"]))

    names = [name for name in rounds[0] if name in rounds[0]]
    for name in names:
        ratios_cpu = [cpu(r[name]) / cpu(r["floor"]) for r in rounds]
        ratios_answer = [answer(r[name]) / answer(r["floor"]) for r in rounds]
        parts = {
            part: spread([r[name]["cpu_ms"][part] for r in rounds])
            for part in ("unit", "pid1", "journald")
        }
        lines.append(
            f"| {name} | {spread([cpu(r[name]) for r in rounds])} | {parts['unit']}"
            f" | {parts['pid1']} | {parts['journald']} | {statistics.median(ratios_cpu):.2f}"
            f" | {spread([answer(r[name]) for r in rounds])}"
            f" | {statistics.median(ratios_answer):.2f} |"
        )
    warm = [statistics.median(r["server"]["warm_ms"]) for r in rounds if "server" in r]
    if warm:
        lines.append(f"\nserver, a connection while it runs: connect->answer {spread(warm)} ms")
    lines.append("\n| unit | held | processes | Rss KiB/process | Pss KiB/process |")
    lines.append("|---|---|---|---|---|")
    for run in runs:
        for name, by_held in run["memory"].items():
            for held, figures in by_held.items():
                per = figures["per_process_kib"]
                lines.append(
                    f"| {name} | {held} | {figures['processes']} | {per['Rss']:.0f}"
                    f" | {per['Pss']:.0f} |"
                )
    return lines


def bench_release(release: str, deb: Path, args: argparse.Namespace) -> list[str]:
    with product_container(release, deb) as ct:
        ct.copy_in(REPO / "bench" / "booted_driver.py", DRIVER)
        install_floor(ct)
        systemd = ct.run(["systemctl", "--version"]).stdout.split("\n")[0]
        started = time.monotonic()
        if args.directives:
            variants = install_variants(ct)
            exposures = {name: exposure(ct, name) for name in variants}
            run = drive(ct, {"floor": FLOOR, **variants}, args)
            lines = directive_table(release, systemd, run, exposures)
            lines.append(f"\n({release}: measured in {time.monotonic() - started:.0f} s)")
            return lines
        handler = drive(ct, {"floor": FLOOR, "handler": HANDLER}, args)
        use_policy_socket(ct, "pbs-policy-server.socket")
        server = drive(ct, {"floor": FLOOR, "server": SERVER}, args)
        use_policy_socket(ct, "pbs-policy.socket")
        lines = report(release, systemd, [handler]) + report(release, systemd, [server])
        lines.append(f"\n({release}: measured in {time.monotonic() - started:.0f} s)")
        return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", default="bookworm,trixie")
    parser.add_argument("--count", type=int, default=40, help="starts per batch")
    parser.add_argument("--rounds", type=int, default=5, help="batches per unit")
    parser.add_argument("--held", type=int, default=10, help="connections held for memory")
    parser.add_argument(
        "--directives", action="store_true", help="the directive table (VARIANTS) instead"
    )
    return each_release(parser.parse_args(), bench_release)


if __name__ == "__main__":
    sys.exit(main())
