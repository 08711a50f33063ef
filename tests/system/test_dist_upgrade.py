"""A mail host upgraded from Debian 12 to 13 with the package in use keeps relaying.

As an administrator does it: the package installed and working on bookworm
(Dovecot 2.3, a POP3 login authorized with a long lifetime), the machine powered
off, trixie's sources written and `apt upgrade --without-new-pkgs` then `apt
full-upgrade` run in its root file system with the host's network (the way the
rootfs cache is built: nspawn without --boot or --private-network), the Dovecot
snippet rewritten in 2.4's syntax, then booted. The authorization from before
the upgrade must still count, and a Dovecot 2.4 login must authorize.

Downloads go to a cache beside the rootfs cache (CACHE_DIR/upgrade-trixie-*), so
only the first run fetches trixie's packages.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from container import CACHE_DIR, TARGETS, Container, missing_requirements
from mailhost import (
    CLIENTS_V4,
    CLIENTS_V6,
    DOVECOT_CONF,
    DOVECOT_SNIPPET,
    USERS,
    add_addresses,
    configure_mail_host,
    dovecot_version,
    imap_login,
    pop3_login,
    smtp_try,
    wait_for_listeners,
)
from product import UNITS, authorizations, install_product, wait_active, wait_authorized
from product import write_config as write_product_config

pytestmark = [pytest.mark.system, pytest.mark.dist_upgrade]

log = logging.getLogger("pbs.system.upgrade")

FROM, TO = "bookworm", "trixie"
REMOTE = "someone@remote.test"
LIFETIME = 86400
"""Long enough to outlast the upgrade by far: the authorization must not expire."""
BEFORE = CLIENTS_V4[-1]
AFTER_V4, AFTER_V6 = CLIENTS_V4[-2], CLIENTS_V6[-1]
ARCHIVES = CACHE_DIR / f"upgrade-{TO}-archives"
LISTS = CACHE_DIR / f"upgrade-{TO}-lists"
APT = "apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
"""Non-interactive, keeping every conffile the admin changed (the PAM file here)."""


def upgrade_script() -> str:
    """The release notes' steps (sources, update, upgrade without new packages, full-upgrade).

    No daemon may start: the root is not booted (policy-rc.d, as in the rootfs build).
    """
    return " && ".join(
        [
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d",
            "chmod 755 /usr/sbin/policy-rc.d",
            f"sed -i 's/\\b{FROM}\\b/{TO}/g' /etc/apt/sources.list",
            "apt-get update -q",
            f"{APT} upgrade --without-new-pkgs",
            f"{APT} full-upgrade",
            "rm /usr/sbin/policy-rc.d",
            "cat /etc/debian_version",
        ]
    )


def rewrite_dovecot_snippet(ct: Container) -> None:
    """What the admin edits before booting: the local snippet, in 2.4's syntax."""
    ct.run_offline(f"cat > {DOVECOT_SNIPPET} <<'PBS_EOF'\n{DOVECOT_CONF['2.4']}PBS_EOF\n")


@dataclass
class Upgrade:
    """The upgraded host and what the upgrade cost."""

    host: Container
    upgrade_seconds: float


def dist_upgrade(ct: Container) -> float:
    """Power off, upgrade offline, rewrite Dovecot's snippet; return the upgrade's seconds.

    One upgrade at a time on this host: two apt runs would fight over the shared
    archive cache's lock.
    """
    ct.halt()
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    (ARCHIVES / "partial").mkdir(exist_ok=True)
    (LISTS / "partial").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(CACHE_DIR / ".upgrade-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        output = ct.run_offline(
            upgrade_script(),
            binds=[(ARCHIVES, "/var/cache/apt/archives"), (LISTS, "/var/lib/apt/lists")],
        )
    seconds = time.monotonic() - started
    log.info("upgraded to Debian %s in %.0f s", output.strip().splitlines()[-1], seconds)
    rewrite_dovecot_snippet(ct)
    return seconds


@pytest.fixture(scope="module")
def upgraded(deb: Path) -> Iterator[Upgrade]:
    """bookworm with the package in use and BEFORE authorized, upgraded to trixie, booted."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    logging.getLogger("pbs.system").setLevel(logging.INFO)
    with Container(TARGETS[f"{FROM}+redis"]) as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        write_product_config(ct, f"[authorization]\nlifetime = {LIFETIME}\n")
        assert dovecot_version(ct) == "2.3"
        assert pop3_login(ct, BEFORE, "alice", USERS["alice"])["ok"]
        assert wait_authorized(ct, BEFORE) == "alice"
        assert smtp_try(ct, BEFORE, [REMOTE])[0][0] == 250
        seconds = dist_upgrade(ct)
        ct.start()
        add_addresses(ct)  # runtime addresses on lo: gone with the reboot
        wait_for_listeners(ct)
        wait_active(ct, *UNITS)
        yield Upgrade(ct, seconds)


def test_the_host_runs_trixie_with_dovecot_24(upgraded: Upgrade) -> None:
    ct = upgraded.host
    assert ct.read_file("/etc/debian_version").startswith("13.")
    assert dovecot_version(ct) == "2.4"


def test_the_package_units_run_after_the_upgrade(upgraded: Upgrade) -> None:
    for unit in UNITS:
        assert upgraded.host.systemctl("is-active", unit).stdout.strip() == "active"


def test_an_authorization_from_before_the_upgrade_still_relays(upgraded: Upgrade) -> None:
    ct = upgraded.host
    user, seconds_left = authorizations(ct)[BEFORE]
    assert user == "alice"
    assert seconds_left > LIFETIME - 3600
    [(code, message)] = smtp_try(ct, BEFORE, [REMOTE])
    assert code == 250, message


def test_a_dovecot_24_pop3_login_after_the_upgrade_authorizes(upgraded: Upgrade) -> None:
    ct = upgraded.host
    assert pop3_login(ct, AFTER_V4, "bob", USERS["bob"])["ok"]
    assert wait_authorized(ct, AFTER_V4) == "bob"
    [(code, message)] = smtp_try(ct, AFTER_V4, [REMOTE])
    assert code == 250, message


def test_a_dovecot_24_imap_login_over_ipv6_after_the_upgrade_authorizes(
    upgraded: Upgrade,
) -> None:
    ct = upgraded.host
    assert imap_login(ct, AFTER_V6, "alice", USERS["alice"])["ok"]
    assert wait_authorized(ct, AFTER_V6) == "alice"
    [(code, message)] = smtp_try(ct, AFTER_V6, [REMOTE])
    assert code == 250, message


def test_a_stranger_is_still_refused_after_the_upgrade(upgraded: Upgrade) -> None:
    [(code, message)] = smtp_try(upgraded.host, CLIENTS_V4[-3], [REMOTE])
    assert code == 554, message
