"""Postfix's own load generator against Postfix with and without our policy service.

Issue #23's last question: what does the policy service cost a site's mail, as
Postfix sees it? Each release is booted with the system tests' machinery, the
.deb installed, and `smtp-source` (from the postfix package) sends from a
network namespace of its own inside the container (192.0.2.200, on a veth pair:
not in mynetworks) to 192.0.2.1:25, one message per SMTP session:

- **relay**: to someone@remote.test, from a client allowed to relay, by a static
  `check_client_access` permit (`none`, no policy service) or by an
  authorization in the store (`pbs-activated grant`) asked through the
  recommended line, pbs_activated.admin.postfix.relay_restrictions(), with the
  per-connection handler (`handler`) or the Accept=no server (`server`);
- **inbound**: to alice@example.test, a local user, under the same lines.

Delivery is cheap (the discard transport, local mail included), so that smtpd
and the policy service are what counts. Configurations take turns round by
round (the order reversed every other round); each figure is a median of the
rounds with their range, and each ratio is to `none` of the same round. CPU is
the whole container's (cgroup2 `cpu.stat` of its root: Postfix, the policy
units, the store, PID 1, journald), the client's excepted; the policy's own
(the handlers' slice or the server's cgroup) beside it, with the handler starts
(the socket's NAccepted), to split against `make bench-booted`'s CPU per start.

    /usr/bin/python3 bench/booted_postfix.py [--releases bookworm,trixie]
        [--rounds 5] [--messages 2000] [--sessions 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# booted_units puts the repository and the system tests' modules on sys.path.
from booted_units import each_release, product_container, spread
from container import Container
from mailhost import without_idle_smtpd
from product import use_policy_socket

from pbs_activated.admin.postfix import relay_restrictions

CLIENT = "192.0.2.200"
SERVER = "192.0.2.1"
NETNS = "pbs-bench-clients"
GRANTED = "/etc/postfix/pbs-bench-granted.cidr"
STATIC_PERMIT = (
    f"permit_mynetworks, permit_sasl_authenticated, check_client_access cidr:{GRANTED},"
    " reject_unauth_destination"
)
UNIFIED = "/sys/fs/cgroup/unified"
POLICY_GROUPS = {
    "handler": "system.slice/system-pbs\\x2dpolicy.slice",
    "server": "system.slice/pbs-policy-server.service",
}
RECIPIENTS = {"relay": "someone@remote.test", "inbound": "alice@example.test"}
CONFIGURATIONS = ("none", "handler", "server")


def client_namespace(ct: Container) -> None:
    """A network namespace holding CLIENT, linked to the container's by a veth pair."""
    ct.run(
        f"""set -e
        ip netns add {NETNS}
        ip link add pbs-bench type veth peer name pbs-client netns {NETNS}
        ip link set pbs-bench up
        ip route add {CLIENT}/32 dev pbs-bench
        ip -n {NETNS} link set lo up
        ip -n {NETNS} addr add {CLIENT}/32 dev pbs-client
        ip -n {NETNS} link set pbs-client up
        ip -n {NETNS} route add {SERVER}/32 dev pbs-client
        """
    )


def usage(ct: Container, group: str) -> float:
    """Seconds of CPU a cgroup (and its children, past ones too) used; 0 if it is gone."""
    text = ct.run(["cat", f"{UNIFIED}/{group}/cpu.stat"], check=False).stdout
    for line in text.splitlines():
        name, value = line.split()
        if name == "usage_usec":
            return int(value) / 1e6
    return 0.0


def accepted(ct: Container) -> int:
    return int(ct.systemctl("show", "-P", "NAccepted", "pbs-policy.socket").stdout)


def configure(ct: Container, configuration: str) -> None:
    """The line and the socket for a configuration, with no smtpd left from before."""
    if configuration == "server":
        use_policy_socket(ct, "pbs-policy-server.socket")
    elif configuration == "handler":
        use_policy_socket(ct, "pbs-policy.socket")
    line = STATIC_PERMIT if configuration == "none" else relay_restrictions()
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={line}"])
    without_idle_smtpd(ct)


def send(
    ct: Container, configuration: str, direction: str, args: argparse.Namespace
) -> dict[str, float]:
    """One smtp-source run: messages/s, CPU per message, policy CPU and starts."""
    # Every run starts without smtpd processes, so that each one opens its policy
    # connection anew (a handler start), as after a quiet spell.
    without_idle_smtpd(ct)
    group = POLICY_GROUPS.get(configuration)
    total_before = usage(ct, "")
    policy_before = usage(ct, group) if group else 0.0
    starts_before = accepted(ct)
    started = time.monotonic()
    ct.run(
        [
            "ip", "netns", "exec", NETNS, "smtp-source",
            "-m", str(args.messages), "-s", str(args.sessions), "-l", "1000",
            "-f", "sender@client.test", "-t", RECIPIENTS[direction], f"{SERVER}:25",
        ],
        timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    total = usage(ct, "") - total_before
    policy = (usage(ct, group) - policy_before) if group else 0.0
    starts = accepted(ct) - starts_before if configuration == "handler" else 0
    return {
        "per_second": args.messages / seconds,
        "cpu_ms": total * 1000 / args.messages,
        "policy_ms": policy * 1000 / args.messages,
        "starts": starts,
    }


def bench_release(release: str, deb: Path, args: argparse.Namespace) -> list[str]:
    with product_container(release, deb) as ct:
        ct.write_file(GRANTED, f"{CLIENT}/32 OK\n")
        ct.run(["postconf", "-e", "local_transport=discard:cheap delivery for the bench"])
        ct.run(["pbs-activated", "grant", CLIENT])
        client_namespace(ct)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_number in range(args.rounds):
            order = CONFIGURATIONS if round_number % 2 == 0 else CONFIGURATIONS[::-1]
            for configuration in order:
                configure(ct, configuration)
                for direction in RECIPIENTS:
                    run = send(ct, configuration, direction, args)
                    results.setdefault((configuration, direction), []).append(run)
        use_policy_socket(ct, "pbs-policy.socket")
        return report(release, results, args)


def report(
    release: str, results: dict[tuple[str, str], list[dict[str, float]]], args: argparse.Namespace
) -> list[str]:
    lines = [
        f"\n## {release}: smtp-source, {args.rounds} rounds x {args.messages} messages"
        f" x {args.sessions} sessions",
        "| direction | policy | messages/s | x none | CPU/message ms | policy CPU/message ms"
        " | handler starts |",
        "|---|---|---|---|---|---|---|",
    ]
    for direction in RECIPIENTS:
        base = results[("none", direction)]
        for configuration in CONFIGURATIONS:
            runs = results[(configuration, direction)]
            ratios = [r["per_second"] / b["per_second"] for r, b in zip(runs, base, strict=True)]
            starts = [r["starts"] for r in runs]
            lines.append(
                f"| {direction} | {configuration} | {spread([r['per_second'] for r in runs], 0)}"
                f" | {spread(ratios, 2)} | {spread([r['cpu_ms'] for r in runs], 2)}"
                f" | {spread([r['policy_ms'] for r in runs], 2)}"
                f" | {statistics.median(starts):.0f} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", default="bookworm,trixie")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    return each_release(parser.parse_args(), bench_release)


if __name__ == "__main__":
    sys.exit(main())
