"""`make bench-postfix`: what the policy service costs Postfix, under Postfix's own load generator.

Issues #22 and #23. A booted Debian 12 and 13 (tests/system's containers) with
the .deb installed and Postfix from Debian; `smtp-source` (in the postfix
package) sends from a network namespace of its own inside the container
(192.0.2.252, a veth to the server's 192.0.2.1), so that the client is a
stranger to Postfix and none of its CPU is the container's. Delivery is cheap
(`discard` for local and remote mail), so smtpd and its restrictions are what
is measured. Three set-ups, in shuffled order within each round (paired):

- `none`: no policy service; the relaying client is permitted by a static
  `check_client_access inline:{...=OK}` in the same place as our check;
- `handler`: the recommended line (pbs_activated.postfix) with
  pbs-policy.socket, one handler per smtpd connection;
- `server`: the same line with pbs-policy-server.socket (Accept=no).

Two kinds of traffic: `inbound` (a stranger's mail to a local user, which the
recommended line never asks us about) and `relay` (the granted client's mail
to a remote domain, one policy request per message).

Per round: messages per second, the container's CPU per message (every unit:
Postfix, our units, journald, PID 1; cgroup2 cpu.stat), and the policy units'
CPU per message (the handler instances' slice or the server's service), with
the handler starts (pbs-policy.socket's NAccepted) it took. Printed as medians
with their spread, and as ratios to `none` within the run: the goals of issue
#23 are relay throughput >= 0.8x `none` with the handler, >= 0.95x with the
server.

Run as root on a machine where tests/system can boot containers. Exits 0 even
when a goal is missed: a measurement is not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "system"), str(REPO / "tests"), str(REPO)]

from container import TARGETS, Container  # noqa: E402
from mailhost import configure_mail_host  # noqa: E402
from product import build_deb, install_product, use_policy_socket  # noqa: E402

from pbs_activated import postfix  # noqa: E402

CLIENT = "192.0.2.252"
GATEWAY = "192.0.2.253"
SERVER = "192.0.2.1"
SETUPS = ("none", "handler", "server")
TRAFFIC = {"inbound": "alice@example.test", "relay": "someone@remote.test"}
SLICES = {
    "handler": r"system.slice/system-pbs\x2dpolicy.slice",
    "server": "system.slice/pbs-policy-server.service",
}

NETNS = f"""
set -e
ip netns add client
ip link add veth-srv type veth peer name veth-cl netns client
ip addr add {GATEWAY} peer {CLIENT} dev veth-srv
ip link set veth-srv up
ip -n client link set lo up
ip -n client addr add {CLIENT} peer {GATEWAY} dev veth-cl
ip -n client link set veth-cl up
ip -n client route add {SERVER} via {GATEWAY}
"""


def static_permit() -> str:
    """The `none` set-up: no policy service, the client permitted where our check would be."""
    return ", ".join(
        [
            *postfix.PERMITTED_FIRST,
            postfix.LOCAL_DESTINATIONS,
            f"check_client_access inline:{{ {{ {CLIENT} = OK }} }}",
            postfix.REFUSAL,
        ]
    )


def set_up(ct: Container, setup: str) -> None:
    """Postfix's line and the listening socket of one set-up; no smtpd keeps an old connection."""
    line = static_permit() if setup == "none" else postfix.relay_restrictions()
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={line}"])
    if setup != "none":
        use_policy_socket(
            ct, "pbs-policy-server.socket" if setup == "server" else "pbs-policy.socket"
        )
    else:
        ct.run(["postfix", "reload"])
    time.sleep(1)  # smtpd processes of the last round have exited at the reload


def cpu_usec(ct: Container, cgroup: str) -> int:
    """A cgroup's CPU in µs (cgroup2 cpu.stat, which keeps what removed children used, with or
    without the cpu controller; under /sys/fs/cgroup/unified where the host is hybrid)."""
    script = (
        'base=/sys/fs/cgroup; [ -d $base/unified ] && base=$base/unified; cat "$base/$1/cpu.stat"'
    )
    result = ct.run(["sh", "-c", script, "cpu", cgroup], check=False)
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" ")
        if name == "usage_usec":
            return int(value)
    return 0


def accepted(ct: Container) -> int:
    out = ct.systemctl("show", "-p", "NAccepted", "--value", "pbs-policy.socket").stdout
    return int(out.strip() or 0)


def one_round(
    ct: Container, setup: str, traffic: str, messages: int, sessions: int
) -> dict[str, float]:
    """Send `messages` with smtp-source; throughput and CPU of the round."""
    policy = SLICES.get(setup, "")
    before = (cpu_usec(ct, ""), cpu_usec(ct, policy) if policy else 0, accepted(ct))
    started = time.monotonic()
    ct.run(
        [
            "ip", "netns", "exec", "client", "smtp-source",
            "-s", str(sessions), "-m", str(messages), "-l", "1024",
            "-f", "sender@client.example.test", "-t", TRAFFIC[traffic], f"{SERVER}:25",
        ],
        timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    ct.run(["sh", "-c", "while postqueue -j | grep -q .; do sleep 0.1; done"], timeout=120)
    after = (cpu_usec(ct, ""), cpu_usec(ct, policy) if policy else 0, accepted(ct))
    return {
        "rate": messages / seconds,
        "cpu_ms": (after[0] - before[0]) / 1000 / messages,
        "policy_ms": (after[1] - before[1]) / 1000 / messages,
        "starts": after[2] - before[2] if setup == "handler" else 0,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def measure(release: str, deb: Path, rounds: int, messages: int, sessions: int) -> list[str]:
    """Every round of every set-up and traffic on one release; the report's lines."""
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with Container(TARGETS[f"{release}+redis"]) as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        ct.run(["postconf", "-e", "local_transport=discard:cheap local delivery"])
        ct.run(["sh", "-c", NETNS])
        ct.run(["pbs-activated", "grant", CLIENT, "--user", "bench", "--lifetime", "86400"])
        for setup in SETUPS:  # a warm-up round each: caches, first starts
            set_up(ct, setup)
            one_round(ct, setup, "relay", messages // 10, sessions)
        for _ in range(rounds):
            for setup in random.sample(SETUPS, len(SETUPS)):
                set_up(ct, setup)
                for traffic in TRAFFIC:
                    found = one_round(ct, setup, traffic, messages, sessions)
                    results.setdefault((setup, traffic), []).append(found)
    lines = [
        f"## {release}: {rounds} rounds x {messages} messages x {sessions} sessions",
        "",
        "| traffic | set-up | msg/s (median, range) | / none | CPU ms/msg | policy CPU ms/msg"
        " | handler starts/msg |",
        "|---|---|---|---|---|---|---|",
    ]
    for traffic in TRAFFIC:
        base = statistics.median(r["rate"] for r in results[("none", traffic)])
        for setup in SETUPS:
            found = results[(setup, traffic)]
            rate = [r["rate"] for r in found]
            lines.append(
                f"| {traffic} | {setup} | {spread(rate)} | {statistics.median(rate) / base:.2f}"
                f" | {spread([r['cpu_ms'] for r in found])}"
                f" | {spread([r['policy_ms'] for r in found])}"
                f" | {statistics.median(r['starts'] for r in found) / messages:.3f} |"
            )
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", action="append", choices=("bookworm", "trixie"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    arguments = parser.parse_args()
    deb = build_deb()
    report = ["# Postfix under smtp-source: no policy service, the handler, the server", ""]
    for release in arguments.release or ["bookworm", "trixie"]:
        report += measure(release, deb, arguments.rounds, arguments.messages, arguments.sessions)
        print("\n".join(report), flush=True)
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "postfix-load.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
