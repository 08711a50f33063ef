"""Upgrading from 0.1.0 keeps relaying working, with and without a url of the site's own.

0.1.0 kept its authorizations in Debian's redis-server on 127.0.0.1:6379, open
to every local user. 0.2.0's default is the package's own store. Here 0.1.0's
real .deb (built from the last 0.1.0 commit) is installed and used in a booted
Debian, then this version is installed over it, as `apt install` would: an
address authorized before the upgrade must still relay afterwards, and after a
reboot too (the new store keeps what it took).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, Target
from mailhost import (
    add_addresses,
    configure_mail_host,
    enable_policy_service,
    pop3_login,
    smtp_try,
)
from product import CONFIG, authorizations, wait_active, wait_authorized
from support import deb_of_commit

pytestmark = pytest.mark.system

LAST_0_1_COMMIT = "daba30cdcd9596e575e1b8b99f8ffb4e8c003dd7"
"""The last commit of 0.1.0 (its .deb is what sites run)."""
REMOTE = ["someone@remote.test"]
OPEN_URL = '[redis]\nurl = "redis://127.0.0.1:6379/0"\n'


def old_deb() -> Path:
    """0.1.0's .deb, built once from git with its own `make deb`, cached under build/."""
    return deb_of_commit(LAST_0_1_COMMIT, "0.1.0")


def apt_install(ct: Container, deb: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """apt-get install `deb` as an administrator would, with apt's extra `options`."""
    path = f"/root/{deb.name}"
    ct.copy_in(deb, path)
    return ct.run(
        # A site that edited its config keeps it, as its administrator would answer.
        [
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
            *options,
            path,
        ],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )


@pytest.fixture
def old_host(target: Target, deb: Path) -> Iterator[Container]:
    """A mail host running 0.1.0 with the policy check on, as a site has it."""
    with Container(target) as ct:
        configure_mail_host(ct)
        apt_install(ct, old_deb())
        wait_active(ct, "pbs-policy.socket", "pbs-journal.service")
        enable_policy_service(ct)
        yield ct


def granted_by_0_1(ct: Container, address: str) -> None:
    ct.run(["pbs-activated", "grant", address, "--user", "alice", "--lifetime", "3600"])
    assert smtp_try(ct, address, REMOTE)[0][0] == 250


def upgraded(ct: Container, deb: Path) -> str:
    """Install this version over 0.1.0; return what apt printed."""
    result = apt_install(ct, deb)
    wait_active(ct, "pbs-store.service", "pbs-policy.socket", "pbs-journal.service")
    version = ct.run(["dpkg-query", "-W", "-f", "${Version}", "pbs-activated"]).stdout
    assert version == deb.name.split("_")[1]
    return result.stdout + result.stderr


def rebooted(ct: Container) -> None:
    ct.halt()
    ct.start()
    add_addresses(ct)
    wait_active(ct, "pbs-store.service", "pbs-policy.socket", "pbs-journal.service", "postfix")


def test_without_a_url_the_authorizations_move_into_the_packages_store(
    old_host: Container, deb: Path
) -> None:
    granted_by_0_1(old_host, "192.0.2.90")
    output = upgraded(old_host, deb)
    assert "1 authorizations in redis://127.0.0.1:6379/0, 1 copied" in output
    user, seconds_left = authorizations(old_host)["192.0.2.90"]
    assert user == "alice" and 3000 < seconds_left <= 3600
    assert smtp_try(old_host, "192.0.2.90", REMOTE)[0][0] == 250
    assert smtp_try(old_host, "192.0.2.91", REMOTE)[0][0] == 554
    rebooted(old_host)
    assert smtp_try(old_host, "192.0.2.90", REMOTE)[0][0] == 250


def test_without_a_url_and_the_old_store_gone_the_reader_reads_the_journal_again(
    old_host: Container, deb: Path
) -> None:
    """A login made under 0.1.0 relays after the upgrade though its store is gone.

    On trixie 0.1.0 authorized no Dovecot 2.4 login at all; re-read by the new
    reader, the same journal entry authorizes.
    """
    assert pop3_login(old_host, "192.0.2.92", "alice", "secret")["ok"]
    old_host.run(["systemctl", "stop", old_host.target.store.unit])
    output = upgraded(old_host, deb)
    assert "reading the last lifetime of the journal again instead" in output
    assert wait_authorized(old_host, "192.0.2.92") == "alice"
    assert smtp_try(old_host, "192.0.2.92", REMOTE)[0][0] == 250


def test_with_a_url_the_site_keeps_its_store_and_is_told_it_is_open(
    old_host: Container, deb: Path
) -> None:
    old_host.write_file(CONFIG, OPEN_URL)
    old_host.run(["systemctl", "restart", "pbs-journal.service"])
    granted_by_0_1(old_host, "192.0.2.93")
    cursor = old_host.journal_cursor()
    output = upgraded(old_host, deb)
    assert "keeping the store redis://127.0.0.1:6379/0" in output
    assert "every local user" in output
    assert smtp_try(old_host, "192.0.2.93", REMOTE)[0][0] == 250
    warnings = old_host.journal("-u", "pbs-journal.service", after_cursor=cursor)
    assert any("is used without a password" in entry.get("MESSAGE", "") for entry in warnings)
