"""The enabled policy socket comes up once Postfix has made its private directory.

Why: the socket skips its start while /var/spool/postfix/private is missing
(ConditionPathIsDirectory=), rather than let systemd make that directory with
the wrong owner. Debian 13's Postfix makes it at its first start, long after
sockets.target: an image with Postfix never started and pbs-activated installed
booted with the socket skipped, and relaying stayed deferred until an
administrator noticed (issue #24). pbs-policy.path and pbs-policy-server.path
start their socket when the directory appears.

Three cases, each with no administrator action between the event and the relay:

* a first boot: the package installed into a powered-off system whose Postfix
  never ran (trixie's cached root as debootstrap left it; bookworm's Postfix
  makes the directory at installation, so it is removed there), with either
  socket enabled (the second by the administrator's switch, then the directory
  removed again and the system booted again);
* the one-run install on a running trixie host where Postfix was not installed
  before: Postfix purged, then `apt-get install` of Postfix's and our .deb in
  one run.

Each host is the module's own: these are installations, not uses of the shared
product host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import CACHE_DIR, DEBCONF_SELECTIONS, MIRROR, Container, Target
from mailhost import (
    USERS,
    add_addresses,
    configure_mail_host,
    enable_policy_service,
    pop3_login,
    smtp_try,
    wait_for_listeners,
)
from product import POLICY_SOCKETS, use_policy_socket, wait_authorized

HANDLER_SOCKET, SERVER_SOCKET = POLICY_SOCKETS

pytestmark = pytest.mark.system
log = logging.getLogger("pbs.system.first_boot")

PRIVATE = "/var/spool/postfix/private"
POSTFIXS_PRIVATE = "postfix:root 700"
"""Owner and mode Postfix gives its private directory (post-install's create-missing)."""
DIST = "/root/dist"
"""Where the host's dist/ is bound into a powered-off container."""
REMOTE = "someone@remote.test"
DEB_CACHE = CACHE_DIR / "debs"
"""Postfix's .deb, kept beside the cached roots: the one-run install needs it offline."""
FETCH_POSTFIX = r"""
set -e
version=$(dpkg-query -W -f '${{Version}}' postfix | sed 's/^.*://')
file=postfix_${{version}}_$(dpkg --print-architecture).deb
if [ ! -s "/root/debs/$file" ]; then
    # The archive's pool has the installed version until a point release replaces
    # it; then apt fetches the current one (its lists cost a minute).
    curl -fsS -o "/root/debs/$file" "{mirror}/pool/main/p/postfix/$file" || {{
        rm -f "/root/debs/$file"
        apt-get update -q && apt-get install -y -q --download-only --reinstall postfix
        file=$(basename /var/cache/apt/archives/postfix_*.deb)
        cp "/var/cache/apt/archives/$file" /root/debs/
    }}
fi
cp "/root/debs/$file" /root/
"""
"""Run in the powered-off root: Postfix's .deb in /root, from DEB_CACHE or the archive."""
PURGE_POSTFIX = "apt-get purge -y -q postfix && rm -rf /var/spool/postfix"
"""What is left of Postfix's spool after the purge goes too, as on a host that never had it."""
SOCKET_WAIT = 30.0
"""Seconds Postfix's start (and so the socket's, by its path unit) may take after boot."""


def apt_install(packages: str) -> str:
    """The shell command an administrator types, non-interactive."""
    return f"apt-get install -y -q --no-install-recommends {packages}"


def wait_listening(ct: Container, socket: str, timeout: float = SOCKET_WAIT) -> None:
    """Wait until `socket` listens, without starting anything ourselves."""
    deadline = time.monotonic() + timeout
    while ct.systemctl("is-active", socket, check=False).stdout.strip() != "active":
        if time.monotonic() > deadline:
            status = ct.systemctl("status", "--no-pager", socket, check=False).stdout
            raise AssertionError(f"{socket} not listening after {timeout}s:\n{status}")
        time.sleep(0.2)


def private_directory(ct: Container) -> str:
    return ct.run(["stat", "-c", "%U:%G %a", PRIVATE]).stdout.strip()


def relays_after_a_login(ct: Container, client: str) -> int:
    """The RCPT answer to a relay attempt right after a POP3 login from client."""
    assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
    assert wait_authorized(ct, client) == "alice"
    return smtp_try(ct, client, [REMOTE])[0][0]


def relays_once_configured(ct: Container, client: str) -> int:
    """relays_after_a_login on a host just made the test mail host, the policy line set."""
    configure_mail_host(ct)
    enable_policy_service(ct)
    return relays_after_a_login(ct, client)


def boot_without_postfixs_private_directory(ct: Container) -> None:
    """Power off, remove the directory as a never-started Postfix has none, boot."""
    ct.halt()
    ct.run_offline(f"rm -rf {PRIVATE}")
    ct.start()


@pytest.fixture(scope="module")
def first_booted(target: Target, deb: Path) -> Iterator[Container]:
    """A host whose first boot comes after pbs-activated was installed, offline, into a
    system whose Postfix never ran (so has no private directory)."""
    ct = Container(target)
    try:
        install = apt_install(f"{DIST}/{deb.name}")
        ct.run_offline(f"rm -rf {PRIVATE} && {install}", [(deb.parent, DIST)])
        ct.start()
        yield ct
    finally:
        ct.stop()


def test_the_first_boot_starts_the_socket_once_postfix_made_its_directory(
    first_booted: Container,
) -> None:
    wait_listening(first_booted, HANDLER_SOCKET)
    assert private_directory(first_booted) == POSTFIXS_PRIVATE


def test_a_login_relays_after_the_first_boot(first_booted: Container) -> None:
    wait_listening(first_booted, HANDLER_SOCKET)
    assert relays_once_configured(first_booted, "192.0.2.30") == 250


@pytest.mark.parametrize(
    ("socket", "client"), [(SERVER_SOCKET, "192.0.2.31"), (HANDLER_SOCKET, "192.0.2.32")]
)
def test_the_enabled_socket_comes_up_at_a_boot_before_postfix_made_its_directory(
    first_booted: Container, socket: str, client: str
) -> None:
    """The administrator's switch to the server socket, then back to the default."""
    [other] = set(POLICY_SOCKETS) - {socket}
    use_policy_socket(first_booted, socket)
    boot_without_postfixs_private_directory(first_booted)
    wait_listening(first_booted, socket)
    assert first_booted.systemctl("is-active", other, check=False).stdout.strip() == "inactive"
    assert private_directory(first_booted) == POSTFIXS_PRIVATE
    add_addresses(first_booted)
    wait_for_listeners(first_booted)
    assert relays_after_a_login(first_booted, client) == 250


@pytest.fixture(scope="module")
def installed_in_one_run(target: Target, deb: Path) -> Iterator[Container]:
    """A running trixie host without Postfix that gets `apt-get install postfix
    pbs-activated` in one run (Postfix's .deb fetched beforehand: the booted
    container has no network)."""
    if target.release != "trixie":
        pytest.skip("bookworm's Postfix makes its private directory at installation")
    ct = Container(target)
    try:
        started = time.monotonic()
        DEB_CACHE.mkdir(parents=True, exist_ok=True)
        # Purged in the powered-off root: booted, the host has never run a Postfix.
        # (Purged while running, its master outlived the purge and the next
        # start waited 90 s for it: no state a real host without Postfix is in.)
        fetch = FETCH_POSTFIX.format(mirror=MIRROR)
        ct.run_offline(f"{fetch}{PURGE_POSTFIX}\n", [(DEB_CACHE, "/root/debs")])
        log.info(
            "Postfix's .deb in place and Postfix purged after %.1fs", time.monotonic() - started
        )
        ct.start()
        assert ct.run(["dpkg-query", "-W", "postfix"], check=False).returncode != 0
        ct.run(["debconf-set-selections"], input=DEBCONF_SELECTIONS)
        ct.copy_in(deb, f"/root/{deb.name}")
        ct.run(
            ["sh", "-c", apt_install(f"/root/postfix_*.deb /root/{deb.name}")],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=300,
        )
        log.info("one-run install done after %.1fs", time.monotonic() - started)
        yield ct
    finally:
        ct.stop()


def test_the_one_run_install_starts_the_socket(installed_in_one_run: Container) -> None:
    wait_listening(installed_in_one_run, HANDLER_SOCKET)
    assert private_directory(installed_in_one_run) == POSTFIXS_PRIVATE


def test_a_login_relays_after_the_one_run_install(installed_in_one_run: Container) -> None:
    wait_listening(installed_in_one_run, HANDLER_SOCKET)
    assert relays_once_configured(installed_in_one_run, "192.0.2.33") == 250
