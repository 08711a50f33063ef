"""Upgrading from 0.2.0 under continuous mail: no 5xx for an authorized client.

pbs-policy.socket (Accept=yes) keeps listening through an upgrade (debian/rules:
--no-stop-on-upgrade), so handlers start while dpkg replaces the package's files
one by one; with module paths changing, a handler could import half an old tree
and half a new one. Here a booted Debian of its own runs 0.2.0's real .deb (built
from its last commit) with 0.2.0's Postfix line, as a 0.2.0 site has it (apt does
not edit main.cf), and clients authorized by real POP3 logins. Then, while swaks
(Debian's, inside the host) sends whole messages without pause:

- loops relaying from the authorized addresses to a remote recipient (Postfix's
  discard transport: nothing leaves the host);
- loops sending local mail to a local user from a stranger's address;

this version's .deb is `apt-get install`ed over 0.2.0, and the traffic goes on
AFTER_DPKG seconds after dpkg has finished. dpkg's start and end are written by
apt's own DPkg::Pre-Invoke and Post-Invoke hooks. Then:

- no relay attempt of an authorized client got 5xx (4xx is allowed: the upgrade
  restarts the store, and a handler that cannot answer leaves Postfix its
  DEFER_IF_REJECT), and every one started after dpkg finished got 250;
- every local message got 250 for its RCPT and for its DATA;
- attempts of every loop, and handlers, started while dpkg ran (counts printed);
- once dpkg has finished, no entry of any unit in the journal says ImportError,
  ModuleNotFoundError or Traceback;
- a new POP3 login after the upgrade, then a relay from it, gets 250.

Each loop runs twice, on two smtpd services, because a handler meets dpkg in two
ways. On port 25, as Debian has it, an smtpd keeps its policy connection, and so
its handler, across sessions for up to max_idle (60 s): handlers started on 0.2.0
answer on while dpkg swaps the files under them. On FRESH_PORT, a second smtpd
with `smtpd_policy_service_request_limit = 1` (the one deviation from a stock
site), every RCPT gets a connection and a handler of its own, as the new smtpd
processes of a busy site do: handlers start all through dpkg's run.

Before debian/preinst served handlers from a copy of the old version, most runs
had a 0.2.0 handler held across the upgrade on port 25 crash: dpkg's new conffile
made it read its config again (service.refresh), which imported configcheck
lazily, now 0.3.0's, whose configtable wanted defaults.LOGIN_WAIT of the 0.2.0
defaults the process already held (AttributeError); and once in about ten runs a
handler started on FRESH_PORT while dpkg ran imported 0.3.0's policy.py beside
0.2.0's service.py (TypeError), the half old, half new tree itself. Postfix asked
again on a new connection, so no client saw it, but a held handler whose next
request came after dpkg had finished would have failed the same way. Now preinst
stops the running handlers and starts new ones from a copy of the old version
until postinst: no process may log a failed import or a traceback at all, while
dpkg runs or after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from container import Container, Target
from mailhost import (
    LOCAL_DOMAIN,
    REMOTE_DOMAIN,
    SERVER_V4,
    USERS,
    SwaksSession,
    configure_mail_host,
    pop3_login,
    swaks_at_once,
    wait_for_listeners,
)
from product import AddressPool, wait_active, wait_authorized
from support import deb_of_commit
from test_upgrade_from_0_1 import apt_install

from pbs_activated.admin import postfix

pytestmark = pytest.mark.system

LAST_0_2_COMMIT = "8b4c2343f2f661076d2ff5060dd2463357d06429"
"""The last commit whose pyproject.toml says 0.2.0 (tests/packaging/test_piuparts.py)."""
PREVIOUS_VERSION = "0.2.0"
STOCK_PORT = 25
FRESH_PORT = 2525
"""A second smtpd service, one policy request per connection (module docstring)."""
PORTS = (STOCK_PORT, FRESH_PORT)
RELAY_LOOPS = 2
"""Authorized clients relaying at once per port, each in a loop of its own."""
WARM_UP = 3.0
"""Seconds of traffic before the upgrade starts: every loop has answers on 0.2.0."""
AFTER_DPKG = 5.0
"""Seconds of traffic after dpkg has finished, on the new version alone."""
REMOTE = f"someone@{REMOTE_DOMAIN}"
LOCAL = f"bob@{LOCAL_DOMAIN}"
UNITS = ("pbs-store.service", "pbs-policy.socket", "pbs-journal.service")
TRAFFIC_UNIT = "pbs-upgrade-traffic.service"
TRAFFIC_DIR = "/root/upgrade-traffic"
STOP_FILE = f"{TRAFFIC_DIR}/stop"
DPKG_STARTED = f"{TRAFFIC_DIR}/dpkg-started"
DPKG_ENDED = f"{TRAFFIC_DIR}/dpkg-ended"
IMPORT_FAILURES = ("ImportError", "ModuleNotFoundError", "Traceback")
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
"""systemd's MESSAGE_ID of "Started <unit>" (a job of type start done)."""
Journal = list[dict[str, Any]]

TRAFFIC = r"""
set -u
dir=$1; shift
# One loop per "kind|source|port|recipient" argument, each its own log, until the stop file.
for spec in "$@"; do
    IFS='|' read -r kind source port recipient <<< "$spec"
    while [ ! -e "$dir/stop" ]; do
        started=$(date +%s.%N)
        out=$(swaks --server {server} --port "$port" --local-interface "$source" \
            --from sender@client.example.test --to "$recipient" --timeout 30 2>&1)
        ended=$(date +%s.%N)
        rcpt=$(printf '%s\n' "$out" | grep -A1 -- '-> RCPT TO' | tail -n 1 | tr -d '\r|')
        data=$(printf '%s\n' "$out" | grep -A1 -- '^ -> \.$' | tail -n 1 | tr -d '\r|')
        if [ -z "$rcpt" ]; then  # no RCPT answered: keep how the session ended
            rcpt="no answer: $(printf '%s\n' "$out" | tail -n 3 | tr -d '\r|' | tr '\n' ' ')"
        fi
        echo "$kind|$source|$port|$started|$ended|$rcpt|$data" >> "$dir/$kind-$source-$port.log"
    done &
done
wait
"""


@dataclass(frozen=True)
class Attempt:
    """One swaks session: who, when (container clock = host clock, epoch seconds), and
    the server's replies to RCPT and to the end of DATA, without swaks' arrow."""

    kind: str
    source: str
    port: int
    started: float
    ended: float
    rcpt: str
    data: str


@dataclass(frozen=True)
class Window:
    """When dpkg ran, from apt's hooks around it (epoch seconds)."""

    started: float
    ended: float

    def holds(self, attempt: Attempt) -> bool:
        """An attempt whose session began while dpkg ran: its handler started then."""
        return self.started <= attempt.started <= self.ended


def old_deb() -> Path:
    """0.2.0's .deb, built once from git with its own `make deb`, cached under build/."""
    return deb_of_commit(LAST_0_2_COMMIT, PREVIOUS_VERSION)


@pytest.fixture
def site_on_0_2(target: Target) -> Iterator[Container]:
    """A mail host of its own running 0.2.0 behind 0.2.0's line, and a second smtpd on
    FRESH_PORT that asks each policy request on a connection of its own."""
    with Container(target) as ct:
        configure_mail_host(ct)
        apt_install(ct, old_deb())
        wait_active(ct, *UNITS)
        line = postfix.legacy_relay_restrictions()
        ct.run(["postconf", "-e", f"smtpd_relay_restrictions={line}"])
        ct.run(["postconf", "-M", f"{FRESH_PORT}/inet={FRESH_PORT} inet n - y - - smtpd"])
        ct.run(["postconf", "-P", f"{FRESH_PORT}/inet/smtpd_policy_service_request_limit=1"])
        ct.run(["postfix", "reload"])
        wait_for_listeners(ct, (FRESH_PORT,))
        yield ct


def authorize(ct: Container, clients: list[str]) -> None:
    """Real POP3 logins from each client, each until the reader has authorized it."""
    for client in clients:
        assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
    for client in clients:
        wait_authorized(ct, client)


def start_traffic(ct: Container, relays: list[str], stranger: str) -> None:
    """The loops of swaks in a transient unit of the host, running until stop_traffic."""
    specs = [
        f"relay|{client}|{port}|{REMOTE}"
        for index, port in enumerate(PORTS)
        for client in relays[index * RELAY_LOOPS : (index + 1) * RELAY_LOOPS]
    ]
    specs += [f"local|{stranger}|{port}|{LOCAL}" for port in PORTS]
    script = TRAFFIC.replace("{server}", SERVER_V4)
    ct.run(["mkdir", "-p", TRAFFIC_DIR])
    ct.run(
        ["systemd-run", "--quiet", f"--unit={TRAFFIC_UNIT}", "/bin/bash", "-c", script]
        + ["traffic", TRAFFIC_DIR, *specs]
    )


def stop_traffic(ct: Container, timeout: float = 60) -> list[Attempt]:
    """Let every loop finish its session, then return all the attempts in start order."""
    ct.run(["touch", STOP_FILE])
    deadline = time.monotonic() + timeout
    while ct.systemctl("is-active", TRAFFIC_UNIT, check=False).stdout.strip() == "active":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{TRAFFIC_UNIT} still running {timeout}s after the stop")
        time.sleep(0.2)
    logs = ct.run(f"cat {TRAFFIC_DIR}/*.log").stdout
    return sorted((parse(line) for line in logs.splitlines()), key=lambda a: a.started)


def parse(line: str) -> Attempt:
    """A traffic log line: kind|source|port|started|ended|rcpt reply|data reply."""
    kind, source, port, started, ended, rcpt, data = line.split("|")
    strip = ("<-  ", "<** ")
    return Attempt(
        kind,
        source,
        int(port),
        float(started),
        float(ended),
        rcpt.removeprefix(strip[0]).removeprefix(strip[1]).strip(),
        data.removeprefix(strip[0]).removeprefix(strip[1]).strip(),
    )


def upgrade_timed(ct: Container, deb: Path) -> Window:
    """apt-get install this version over 0.2.0 (conffiles kept: apt_install),
    with apt's hooks writing the time right before and right after dpkg."""
    apt_install(
        ct,
        deb,
        "-o",
        f"DPkg::Pre-Invoke::=date +%s.%N > {DPKG_STARTED}",
        "-o",
        f"DPkg::Post-Invoke::=date +%s.%N > {DPKG_ENDED}",
    )
    version = ct.run(["dpkg-query", "-W", "-f", "${Version}", "pbs-activated"]).stdout
    assert version == deb.name.split("_")[1]
    return Window(float(ct.read_file(DPKG_STARTED)), float(ct.read_file(DPKG_ENDED)))


def wait_for_attempts(ct: Container, count: int, timeout: float = 30) -> None:
    """Block until the loops have logged `count` sessions between them (warm-up)."""
    deadline = time.monotonic() + timeout
    while True:
        logged = ct.run(f"cat {TRAFFIC_DIR}/*.log 2>/dev/null | wc -l", check=False).stdout
        if int(logged.strip() or 0) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{logged.strip()} of {count} sessions after {timeout}s")
        time.sleep(0.2)


def failed_processes(entries: Journal) -> dict[str, list[str]]:
    """Every message of each process that logged a failed import or a traceback, any
    unit's, as {"unit[pid]": its messages}: a traceback is one entry per line."""
    by_process: dict[str, list[str]] = {}
    failed: set[str] = set()
    for entry in entries:
        process = f"{entry.get('_SYSTEMD_UNIT', '?')}[{entry.get('_PID', '?')}]"
        message = str(entry.get("MESSAGE", ""))
        by_process.setdefault(process, []).append(message)
        if any(word in message for word in IMPORT_FAILURES):
            failed.add(process)
    return {process: by_process[process] for process in sorted(failed)}


def handler_starts(entries: Journal, window: Window) -> int:
    """How many handlers (pbs-policy@ instances) systemd started while dpkg ran."""
    return sum(
        entry.get("MESSAGE_ID") == UNIT_STARTED
        and str(entry.get("UNIT", "")).startswith("pbs-policy@")
        and window.started <= int(entry["__REALTIME_TIMESTAMP"]) / 1e6 <= window.ended
        for entry in entries
    )


def policy_warnings(entries: Journal) -> list[str]:
    """Postfix's warnings about the policy service (a handler that failed to answer)."""
    return [
        str(entry["MESSAGE"])
        for entry in entries
        if str(entry.get("SYSLOG_IDENTIFIER", "")).startswith("postfix/")
        and "warning:" in str(entry.get("MESSAGE", ""))
    ]


def code_counts(attempts: list[Attempt]) -> dict[str, int]:
    """How many attempts got each RCPT reply code (the reply's first three characters)."""
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt.rcpt[:3]] = counts.get(attempt.rcpt[:3], 0) + 1
    return dict(sorted(counts.items()))


def summary(attempts: list[Attempt], window: Window) -> str:
    """Each loop kind and port: attempts, their RCPT codes, and how many began in dpkg."""
    parts = []
    for kind in ("relay", "local"):
        for port in PORTS:
            mine = [a for a in attempts if a.kind == kind and a.port == port]
            in_dpkg = [a for a in mine if window.holds(a)]
            parts.append(
                f"{kind}:{port} {len(mine)} {code_counts(mine)}"
                f" (during dpkg {len(in_dpkg)} {code_counts(in_dpkg)})"
            )
    return "; ".join(parts)


def report(target: Target, attempts: list[Attempt], window: Window, during: Journal) -> None:
    """The figures, for the log and the commit: what ran when, and what it was answered;
    and what failed while dpkg ran, if anything did."""
    print(
        f"\n{target.name}: dpkg ran {window.ended - window.started:.1f} s,"
        f" traffic {attempts[-1].ended - attempts[0].started:.1f} s,"
        f" {handler_starts(during, window)} handlers started during dpkg,"
        f" {len(failed_processes(during))} processes with a traceback while dpkg ran;"
        f" {summary(attempts, window)}"
    )
    for process, lines in failed_processes(during).items():
        print(f"  while dpkg ran, {process}:\n    " + "\n    ".join(lines))
    for warning in policy_warnings(during):
        print(f"  while dpkg ran, Postfix: {warning}")
    for attempt in attempts:
        if not attempt.rcpt.startswith("250"):
            print(f"  {attempt}")


def test_an_upgrade_from_0_2_under_mail_refuses_no_authorized_client_and_no_local_mail(
    site_on_0_2: Container, deb: Path, target: Target, addresses: AddressPool
) -> None:
    ct = site_on_0_2
    relays = [addresses.v4() for _ in range(RELAY_LOOPS * len(PORTS))]
    stranger, newcomer = addresses.v4(), addresses.v4()
    authorize(ct, relays)
    start_traffic(ct, relays, stranger)
    time.sleep(WARM_UP)
    wait_for_attempts(ct, (RELAY_LOOPS + 1) * len(PORTS))
    before = ct.journal_cursor()
    window = upgrade_timed(ct, deb)
    after = ct.journal_cursor()
    time.sleep(AFTER_DPKG)
    attempts = stop_traffic(ct)
    since = ct.journal(after_cursor=after)
    later = {entry["__CURSOR"] for entry in since}
    during = [entry for entry in ct.journal(after_cursor=before) if entry["__CURSOR"] not in later]
    report(target, attempts, window, during)

    relayed = [a for a in attempts if a.kind == "relay"]
    local = [a for a in attempts if a.kind == "local"]
    assert not [a for a in relayed if a.rcpt[:1] not in ("2", "4")], "5xx or no answer"
    assert not [a for a in relayed if a.started > window.ended and not a.rcpt.startswith("250")]
    assert not [a for a in local if not (a.rcpt.startswith("250") and a.data.startswith("250"))]
    assert {(a.kind, a.port) for a in attempts if window.holds(a)} == {
        (kind, port) for kind in ("relay", "local") for port in PORTS
    }
    assert handler_starts(during, window) > 0
    assert failed_processes(during) == {}
    assert failed_processes(since) == {}

    # What preinst served the handlers from is gone: new handlers run the new files.
    leftovers = "/run/pbs-activated-upgrade /run/systemd/system/pbs-policy@.service.d"
    assert ct.run(f"ls -d {leftovers}", check=False).stdout == ""
    wait_active(ct, *UNITS)
    authorize(ct, [newcomer])
    [relay] = swaks_at_once(ct, [SwaksSession("newcomer", newcomer, (REMOTE,))])["newcomer"]
    assert relay.reply.startswith("250 "), relay
