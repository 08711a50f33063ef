"""`apt purge` leaves nothing of ours in /etc, /var, /run or Postfix's spool.

Why a booted system: piuparts checks install and purge in a chroot where no
service ever runs, so what running services leave behind (sockets, the store's
data, the reader's cursor, the handlers' cache) shows only here. The host is the
module's own, not the shared product host: it is purged. It is used as a site
would use it before the purge: logins, relays, an administrator's grant, both
policy sockets (the purge comes while the one-process socket listens, which the
package never enables itself).

The proof is a listing of /etc, /var and /run before installation and after the
purge: what is new is ours, or some other program's state that our use touched
(EPHEMERAL says which and why each is not ours).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, Target
from mailhost import USERS, configure_mail_host, pop3_login, smtp_try
from product import (
    POLICY_SOCKET,
    install_product,
    use_policy_socket,
    wait_authorized,
)

pytestmark = pytest.mark.system

LISTED = ("/etc", "/var", "/run")
REMOTE = "someone@remote.test"

EPHEMERAL = re.compile(
    "|".join(
        [
            r"/var/log/.*",  # the journal, dpkg's and apt's logs: the record of what ran
            r"/var/lib/(dpkg|apt)/.*",  # the package managers' records
            r"/var/cache/(apt|debconf)/.*",
            r"/run/adduser",  # adduser's lock, taken when postinst made the groups
            r"/run/systemd/.*",  # systemd's: e.g. dynamic-uid/, the registry of dynamic users
            r"/run/dovecot/.*",  # Dovecot's runtime files, made by the tests' logins
            r"/var/spool/postfix/(pid|active|incoming|deferred|defer|bounce|flush)/.*",  # mail
            r"/var/mail/.*",
            r"/etc/(group|gshadow)-?",  # the groups stay
        ]
    )
)
"""Paths that may be new or changed after the purge without being ours: the log,
the package managers' records, systemd's and the mail servers' runtime files and
queues. The groups pbs-activated and pbs-activated-admin stay, as postrm says
(files elsewhere may still name them), hence /etc/group and /etc/gshadow."""


def listing(ct: Container) -> set[str]:
    """Every path under LISTED, with its type, owner and mode (a socket replaced by a
    directory of the same name is a change)."""
    result = ct.run(["find", *LISTED, "-xdev", "-printf", r"%p %y %u:%g %m\n"])
    return set(result.stdout.splitlines())


@pytest.fixture(scope="module")
def purged(target: Target, deb: Path) -> Iterator[tuple[set[str], set[str], Container]]:
    """(before, after, host): the listings around a use of the package and its purge."""
    with Container(target) as ct:
        configure_mail_host(ct)
        before = listing(ct)
        install_product(ct, deb)
        used(ct)
        ct.run(
            ["apt-get", "purge", "-y", "pbs-activated"],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=300,
        )
        yield before, listing(ct), ct


def used(ct: Container) -> None:
    """A POP3 login relayed through each socket, and an administrator's grant."""
    sockets = (("pbs-policy.socket", "192.0.2.20"), ("pbs-policy-server.socket", "192.0.2.21"))
    for socket, client in sockets:
        use_policy_socket(ct, socket)
        assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
        assert wait_authorized(ct, client) == "alice"
        assert smtp_try(ct, client, [REMOTE])[0][0] == 250
    ct.run(["pbs-activated", "grant", "192.0.2.22", "--user", "bob"])


def paths(lines: set[str]) -> set[str]:
    return {line.rsplit(" ", 3)[0] for line in lines}


def test_purge_leaves_nothing_of_ours(
    purged: tuple[set[str], set[str], Container],
) -> None:
    before, after, _ = purged
    new = after - before
    assert sorted(line for line in new if not EPHEMERAL.fullmatch(line.rsplit(" ", 3)[0])) == []


def test_purge_leaves_no_path_named_after_the_package(
    purged: tuple[set[str], set[str], Container],
) -> None:
    """Not even where EPHEMERAL lets other programs' state change (systemd's /run,
    the package managers' records): the test harness's own files are older."""
    before, after, _ = purged
    assert sorted(path for path in paths(after) - paths(before) if "pbs" in path) == []


def test_no_policy_socket_is_left_in_postfixs_spool(
    purged: tuple[set[str], set[str], Container],
) -> None:
    _, after, _ = purged
    assert POLICY_SOCKET not in paths(after)
    assert "/run/pbs-store-admin.sock" not in paths(after)


def test_postfixs_private_directory_is_left_as_postfix_made_it(
    purged: tuple[set[str], set[str], Container],
) -> None:
    before, after, _ = purged
    private = {line for line in after if line.startswith("/var/spool/postfix/private ")}
    assert private == {"/var/spool/postfix/private d postfix:root 700"}
    assert private <= before


def test_the_groups_stay(purged: tuple[set[str], set[str], Container]) -> None:
    _, _, ct = purged
    for group in ("pbs-activated", "pbs-activated-admin"):
        assert ct.run(["getent", "group", group], check=False).returncode == 0
