"""A client that sends the instant its POP3/IMAP session ends (issue #22), with real clients.

curl (POP3 and IMAP) logs in from a fresh address and, the moment it exits, swaks
(both from Debian, run inside the booted host) relays from the same address; Postfix
has no postscreen in front (its pregreet wait would hide the race). journald tells
its readers of a new entry 250-500 ms after writing it, while the RCPT reaches the
handler ~40 ms after the session ends: before 0.3.0 nearly every such relay got 554.
Now the handler waits for the login on its way, waking the reader (loginwait.py,
wakeup.py): every relay must get 250, also while other units write to the journal.
A stranger still gets 554, after `[policy] login_wait`.

The figures (login -> authorized latency, what the handler waited, the stranger's
added latency and how long its smtpd is held) go to build/relay-race-<target>.md.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from container import Container
from mailhost import SERVER_V4, USERS
from product import use_policy_socket

from pbs_activated.config import defaults

pytestmark = pytest.mark.system

TRIES = 60
"""Relays per protocol and release sent the instant the login session ends."""

RACE_CLIENTS = [f"192.0.2.{n}" for n in range(100, 100 + 2 * TRIES)]
"""Addresses of their own (AddressPool hands out 192.0.2.10-99): each try a fresh one."""

STRANGERS = [f"192.0.2.{n}" for n in range(230, 240)]

REPORT_DIR = Path(__file__).resolve().parents[2] / "build"

TRY_SCRIPT = r"""
set -u
proto=$1; shift
for addr in "$@"; do
    curl -s --max-time 10 --interface "$addr" -u alice:{password} "$proto://{server}/" -o /dev/null
    login=$?
    ended=$(date +%s.%N)
    out=$(swaks --server {server} --local-interface "$addr" --from sender@client.example.test \
        --to someone@remote.test --timeout 30 2>&1)
    replied=$(date +%s.%N)
    rcpt=$(printf '%s\n' "$out" | grep -A1 -- '-> RCPT TO' | tail -n 1 | tr -d '\r')
    echo "$addr|$login|$ended|$replied|$rcpt"
done
"""

NOISE = 'i=0; while :; do echo "noise $i"; i=$((i+1)); sleep 0.002; done'
"""A unit that writes ~400 entries a second: journald's notices then come from its
entries too, at other phases than the logins'."""


def relay_after_login(ct: Container, proto: str, clients: list[str]) -> list[dict[str, Any]]:
    """Log in with curl from each client, relay with swaks the moment curl exits.

    Each relay is a whole message (to the discard transport): a session that
    quit after RCPT would never deliver, and past 100 of them Postfix's inbound
    flow control (in_flow_delay) would hold every new message for a second.
    `seconds` is the whole SMTP session, what holds an smtpd process; `ended`
    is when curl's session ended, on the host's clock as the journal's.
    """
    script = TRY_SCRIPT.replace("{password}", USERS["alice"]).replace("{server}", SERVER_V4)
    result = ct.run(["bash", "-c", script, "race", proto, *clients], timeout=600)
    tries = []
    for line in result.stdout.splitlines():
        address, login, ended, replied, rcpt = line.split("|", 4)
        tries.append(
            {
                "address": address,
                "login": int(login),
                "ended": float(ended),
                "seconds": float(replied) - float(ended),
                "rcpt": rcpt.removeprefix("<-  ").removeprefix("<** "),
            }
        )
    return tries


def add_race_addresses(ct: Container) -> None:
    batch = [f"addr replace {a}/32 dev lo" for a in [*RACE_CLIENTS, *STRANGERS]]
    ct.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")


def timestamps(entries: list[dict[str, Any]], field: str) -> dict[str, int]:
    """The first entry's realtime (µs) per value of `field`."""
    found: dict[str, int] = {}
    for entry in entries:
        value = entry.get(field)
        if isinstance(value, str) and value not in found:
            found[value] = int(entry["__REALTIME_TIMESTAMP"])
    return found


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):.0f}, p90 {p90:.0f}, max {ordered[-1]:.0f}"


def test_relays_sent_the_instant_the_session_ends_are_all_accepted(
    product_host: Container, target: Any
) -> None:
    ct = product_host
    add_race_addresses(ct)
    cursor = ct.journal_cursor()
    tries: dict[str, list[dict[str, Any]]] = {}
    half = TRIES // 2
    for index, proto in enumerate(("pop3", "imap")):
        clients = RACE_CLIENTS[index * TRIES : (index + 1) * TRIES]
        quiet = relay_after_login(ct, proto, clients[:half])
        ct.run(["systemd-run", "--quiet", "--unit=pbs-noise", "/bin/sh", "-c", NOISE])
        try:
            noisy = relay_after_login(ct, proto, clients[half:])
        finally:
            ct.systemctl("stop", "pbs-noise.service", check=False)
        tries[proto] = quiet + noisy
    strangers = relay_after_login(ct, "none", STRANGERS)  # curl fails: no login at all

    logins = timestamps(
        [
            e
            for e in ct.journal("_SYSTEMD_UNIT=dovecot.service", after_cursor=cursor)
            if "rip=" in str(e.get("MESSAGE", ""))
        ],
        "MESSAGE",
    )
    login_at = {message.split("rip=", 1)[1].split(",", 1)[0]: at for message, at in logins.items()}
    authorized_at = timestamps(
        ct.journal("PBS_EVENT=login", after_cursor=cursor), "PBS_CLIENT_ADDRESS"
    )
    decisions = ct.journal(
        "SYSLOG_IDENTIFIER=pbs-activated", "PBS_PROTOCOL_STATE=RCPT", after_cursor=cursor
    )
    waited = {
        e["PBS_CLIENT_ADDRESS"]: int(e["PBS_WAITED_MS"]) for e in decisions if "PBS_WAITED_MS" in e
    }
    answered_at = timestamps(decisions, "PBS_CLIENT_ADDRESS")

    lines = [f"# Relay right after the login: {target.name}", ""]
    for proto, results in tries.items():
        latencies = [
            (authorized_at[t["address"]] - login_at[t["address"]]) / 1000
            for t in results
            if t["address"] in authorized_at and t["address"] in login_at
        ]
        waits = [waited[t["address"]] for t in results if t["address"] in waited]
        answered = [
            answered_at[t["address"]] / 1000 - t["ended"] * 1000
            for t in results
            if t["address"] in answered_at
        ]
        lines += [
            f"## {proto}: {len(results)} relays the instant curl ended ({half} with a noisy unit)",
            f"- replies: {sorted({t['rcpt'][:3] for t in results})}",
            f"- login -> authorized (ms): {summary(latencies)}",
            f"- session end -> RCPT answered (ms): {summary(answered)}",
            f"- relays that waited: {len(waits)}, waited (ms): {summary(waits or [0])}",
            "",
        ]
    lines += [
        f"## strangers: {len(strangers)} relays without a login",
        f"- replies: {sorted({t['rcpt'][:3] for t in strangers})}",
        f"- SMTP session, connect to QUIT (what holds an smtpd, ms):"
        f" {summary([t['seconds'] * 1000 for t in strangers])}"
        f" (login_wait {defaults.LOGIN_WAIT * 1000:.0f} ms)",
    ]
    REPORT_DIR.mkdir(exist_ok=True)
    (REPORT_DIR / f"relay-race-{target.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    for proto, results in tries.items():
        assert all(t["login"] == 0 for t in results), (proto, results)
        refused = [t for t in results if not t["rcpt"].startswith("250")]
        assert not refused, (proto, refused)
    assert all(t["rcpt"].startswith("554") for t in strangers), strangers
    assert all(t["seconds"] >= defaults.LOGIN_WAIT for t in strangers), strangers


SERVER_CLIENTS = [f"192.0.2.{n}" for n in range(240, 250)]
"""Below 192.0.2.250: test_sandbox's probe and the benches use addresses above."""


def test_the_policy_server_relays_the_instant_the_session_ends_too(
    product_host: Container,
) -> None:
    """The Accept=no server waits without blocking (loginwait.Waits): the same race, answered."""
    ct = product_host
    batch = [f"addr replace {a}/32 dev lo" for a in SERVER_CLIENTS]
    ct.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
    use_policy_socket(ct, "pbs-policy-server.socket")
    try:
        tries = relay_after_login(ct, "pop3", SERVER_CLIENTS)
    finally:
        use_policy_socket(ct, "pbs-policy.socket")
    assert all(t["login"] == 0 for t in tries), tries
    assert all(t["rcpt"].startswith("250") for t in tries), tries


WAKE_PROBE = """
import socket, sys
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    sender.sendto(b"", sys.argv[1])
except OSError as error:
    print(type(error).__name__)
else:
    print("sent")
"""


def test_no_local_user_can_reach_the_wake_up_socket(product_host: Container) -> None:
    """Only the services' group may wake the reader; what it would carry is nothing anyway."""
    ct = product_host
    path = defaults.WAKE_SOCKET
    listing = ct.run(["stat", "-c", "%a %G %F", "/run/pbs-journal", path]).stdout.splitlines()
    assert listing == ["750 pbs-activated directory", "620 pbs-activated socket"]
    probe = ["python3", "-c", WAKE_PROBE, path]
    assert ct.run(probe, user="nobody").stdout.strip() == "PermissionError"
    assert ct.run(probe).stdout.strip() == "sent"  # root may, as it may do anything
