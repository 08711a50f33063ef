"""pbs-activated as a user gets it: the built .deb, apt-installed into the mail host.

Why: the system tests must prove the package, not the working tree. So the
product is always `apt-get install`ed from dist/ into a booted container (which
has no network: every dependency of the package is already in the cached rootfs),
enabled as the package enables it, and asked about only through what an admin
has: Postfix, Dovecot, `pbs-activated list`, `systemctl` and `journalctl`.

Used by conftest.py (fixtures `deb`, `product_host`) and by demo.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from container import Container
from mailhost import (
    CLIENTS_V4,
    CLIENTS_V6,
    USERS,
    enable_policy_service,
    pop3_login,
    without_idle_smtpd,
)

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""pybuild breaks on a python3 from another prefix first on PATH (pyenv, /usr/local)."""

CONFIG = "/etc/pbs-activated/pbs-activated.toml"
UNITS = ("pbs-policy.socket", "pbs-journal.service")
"""What the package enables and starts on installation."""

POLICY_SOCKET = "/var/spool/postfix/private/pbs-policy"
POLICY_SOCKETS = ("pbs-policy.socket", "pbs-policy-server.socket")
"""The two ways to serve POLICY_SOCKET: a handler per connection (the package's
default) or one server process for all (Accept=no, the administrator's switch)."""
AUTHORIZATION_WAIT = 20.0
"""Seconds a login may take to become an authorization. Normally ~0.1 s; the slack
covers a reader restart (SIGKILL test) and its Redis back-off (outage test, ≤ 10 s)."""


class BuildFailed(RuntimeError):
    """`make deb` failed; the message carries its output."""


def project_version() -> str:
    """The version, from pyproject.toml: its one home."""
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    if match is None:
        raise BuildFailed("pyproject.toml has no version line")
    return match.group(1)


def deb_path() -> Path:
    return REPO / "dist" / f"pbs-activated_{project_version()}_all.deb"


def build_deb() -> Path:
    """Run `make deb`, which rebuilds only when a source file is newer than the .deb.

    Three attempts: another `make deb` in the same tree (a parallel test run)
    may remove build/deb under this one.
    """
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    environment["PATH"] = DEBIAN_PATH
    for attempt in (1, 2, 3):
        if attempt > 1:
            time.sleep(5)
        result = subprocess.run(
            ["make", "-C", str(REPO), "deb"],
            capture_output=True,
            text=True,
            env=environment,
            timeout=900,
        )
        if result.returncode == 0 and deb_path().is_file():
            return deb_path()
        if attempt == 3:
            raise BuildFailed(f"make deb failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    raise AssertionError("unreachable")


def install_product(ct: Container, deb: Path) -> str:
    """apt-get install the .deb offline, wait for its units, turn Postfix's policy check on.

    Returns apt's output (the demo shows it).
    """
    target = f"/root/{deb.name}"
    ct.copy_in(deb, target)
    result = ct.run(
        ["apt-get", "install", "-y", "--no-install-recommends", target],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )
    wait_active(ct, *UNITS)
    enable_policy_service(ct)
    return result.stdout


def wait_active(ct: Container, *units: str, timeout: float = 20) -> None:
    """Block until every unit is active (a restarted reader needs a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        states = ct.run(["systemctl", "is-active", *units], check=False).stdout.split()
        if states and all(state == "active" for state in states):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{units} not active: {states}")
        time.sleep(0.1)


def use_policy_socket(ct: Container, socket: str) -> None:
    """Serve Postfix's policy requests from `socket` (one of POLICY_SOCKETS).

    As pbs-activated(8) tells an administrator: `systemctl disable --now` the
    other, `systemctl enable --now` this one. First no smtpd may hold a policy
    connection (without_idle_smtpd), so that the next session connects to the
    socket chosen and none loses a connection under it.
    """
    [other] = set(POLICY_SOCKETS) - {socket}
    without_idle_smtpd(ct)
    ct.systemctl("disable", "--now", other)
    ct.systemctl("enable", "--now", socket)
    wait_active(ct, socket)


def write_config(ct: Container, text: str) -> None:
    """Replace the conffile and restart the reader, which reads it at start.

    The handler reads it per Postfix connection, so it needs nothing; the policy
    server (pbs-policy-server.service) would need a restart.
    """
    ct.write_file(CONFIG, text)
    ct.systemctl("restart", "pbs-journal.service")
    wait_active(ct, "pbs-journal.service")


# --------------------------------------------------------------------------
# What is authorized: the admin's view
# --------------------------------------------------------------------------


def authorizations(ct: Container) -> dict[str, tuple[str, int]]:
    """`pbs-activated list` as {address: (user, seconds left)}."""
    found = {}
    for line in ct.run(["pbs-activated", "list"]).stdout.splitlines():
        address, user, left = line.split("\t")
        found[address] = (user, int(left) if left.isdigit() else 10**9)
    return found


def wait_authorized(ct: Container, address: str, timeout: float = AUTHORIZATION_WAIT) -> str:
    """Wait until the reader has authorized address; return the user it is for."""
    deadline = time.monotonic() + timeout
    while True:
        found = authorizations(ct)
        if address in found:
            return found[address][0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} not authorized after {timeout}s: {found}")
        time.sleep(0.1)


def reader_caught_up(ct: Container, sentinel: str) -> None:
    """Return once the reader has handled every journal entry written before this call.

    A real POP3 login from a fresh sentinel address goes into the journal after
    whatever the test logged; the reader handles entries in order, so once the
    sentinel is authorized, every earlier line has had its chance to authorize.
    """
    assert pop3_login(ct, sentinel, "bob", USERS["bob"])["ok"]
    wait_authorized(ct, sentinel)


def login_line(
    address: str, user: str = "alice", service: str = "pop3", verb: str = "Login"
) -> str:
    """A Dovecot login line, word for word as Dovecot writes it, for forgeries.

    verb: `Login` as 2.3 writes it, `Logged in` as 2.4 does (mailhost.login_verb).
    """
    return (
        f"{service}-login: {verb}: user=<{user}>, method=PLAIN, rip={address}, "
        f"lip=192.0.2.1, mpid=4242, session=<forgedforgedAAAB>"
    )


# --------------------------------------------------------------------------
# The audit trail
# --------------------------------------------------------------------------


def wait_for_entries(
    ct: Container, *matches: str, after_cursor: str, count: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    """The journal entries matching `matches` since the cursor, once there are `count`.

    Audit entries reach journald asynchronously; a test polls for them.
    """
    deadline = time.monotonic() + timeout
    while True:
        entries = ct.journal(*matches, after_cursor=after_cursor)
        if len(entries) >= count:
            return entries
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(entries)} of {count} entries {matches} after {timeout}s")
        time.sleep(0.1)


def decisions(
    ct: Container, address: str, after_cursor: str, count: int = 1
) -> list[dict[str, Any]]:
    """The handler's decision entries about one client address since the cursor."""
    entries = wait_for_entries(
        ct,
        "SYSLOG_IDENTIFIER=pbs-activated",
        f"PBS_CLIENT_ADDRESS={address}",
        after_cursor=after_cursor,
        count=count,
    )
    return [entry for entry in entries if "PBS_ACTION" in entry]


class AddressPool:
    """Hands out client addresses no earlier test of the session has used.

    Dovecot's auth penalty after a failed login, and every authorization, are per
    address: fresh addresses keep tests independent without resetting anything.
    """

    def __init__(self) -> None:
        self._v4 = iter(CLIENTS_V4[3:])  # the first three are the smoke test's
        self._v6 = iter(CLIENTS_V6[2:])

    def v4(self) -> str:
        return next(self._v4)

    def v6(self) -> str:
        return next(self._v6)
