"""The .deb installed, upgraded, removed and purged in a booted Debian 12.

The container is the system tests' (tests/system/container.py): Debian's
bookworm with systemd as PID 1, Postfix, Dovecot, Redis, python3-redis and
python3-systemd, so `apt-get install` of the .deb needs no network. Read-only
checks share one container; each lifecycle check boots a fresh one (a second).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from debpackage import ASK_THE_POLICY_SOCKET, project_version, shell
from system.container import missing_requirements

pytestmark = pytest.mark.system

PACKAGE = "/root/pbs-activated.deb"
UPGRADE = "/root/pbs-activated-upgrade.deb"
STAND_IN = "/root/postfix-stand-in.deb"
STATE = (
    "/var/lib/private/pbs-activated",
    "/var/lib/pbs-activated",
    "/var/cache/private/pbs-policy",
    "/var/cache/pbs-policy",
    "/var/lib/private/pbs-store",
    "/var/lib/pbs-store",
    "/etc/pbs-activated/secrets",
)
TO_THE_SERVER_SOCKET = (
    "systemctl disable --now pbs-policy.socket && systemctl enable --now pbs-policy-server.socket"
)
"""The switch to one server process for all connections, as pbs-activated(8) gives it."""


@pytest.fixture(scope="session")
def upgrade_deb(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same package with a higher version, so dpkg runs its upgrade path."""
    tree = tmp_path_factory.mktemp("upgrade") / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    version = f"Version: {project_version()}"
    control.write_text(control.read_text().replace(version, f"{version}+upgrade1"))
    path = tree.parent / "upgrade.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="session")
def postfix_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package that, like postfix, ships files under /var/spool/postfix and makes
    its private directory in postinst: installing it is what installing Postfix
    after pbs-activated looks like to dpkg."""
    tree = tmp_path_factory.mktemp("stand-in") / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "var/spool/postfix/etc").mkdir(parents=True)
    (tree / "var/spool/postfix/etc/stand-in").write_text("")
    (tree / "DEBIAN/control").write_text(
        "Package: postfix-stand-in\nVersion: 1\nArchitecture: all\n"
        "Maintainer: tests <tests@example.test>\nDescription: files under /var/spool/postfix\n"
    )
    postinst = tree / "DEBIAN/postinst"
    postinst.write_text(
        "#!/bin/sh\nset -e\n[ -d /var/spool/postfix/private ] || "
        "mv /var/spool/postfix/private.away /var/spool/postfix/private\n"
    )
    postinst.chmod(0o755)
    path = tree.parent / "postfix-stand-in.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(path)],
        check=True,
        capture_output=True,
    )
    return path


def booted(deb: Path, upgrade: Path, stand_in: Path) -> Iterator[object]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    from system.container import Container

    with Container() as container:
        container.copy_in(deb, PACKAGE)
        container.copy_in(upgrade, UPGRADE)
        container.copy_in(stand_in, STAND_IN)
        container.run(f"cd /root && apt-get install -y ./{Path(PACKAGE).name}", timeout=300)
        yield container


@pytest.fixture(scope="module")
def installed(deb: Path, upgrade_deb: Path, postfix_stand_in: Path) -> Iterator[object]:
    """One container with the package installed, for checks that change nothing."""
    yield from booted(deb, upgrade_deb, postfix_stand_in)


@pytest.fixture
def fresh(deb: Path, upgrade_deb: Path, postfix_stand_in: Path) -> Iterator[object]:
    """A container of its own, for a check that upgrades, removes or purges."""
    yield from booted(deb, upgrade_deb, postfix_stand_in)


def test_installing_enables_the_policy_socket_and_the_reader(installed: object) -> None:
    assert shell(installed, "systemctl is-enabled pbs-policy.socket") == "enabled"
    assert shell(installed, "systemctl is-enabled pbs-journal.service") == "enabled"


def test_installing_starts_the_policy_socket_and_the_reader(installed: object) -> None:
    assert shell(installed, "systemctl is-active pbs-policy.socket") == "active"
    assert shell(installed, "systemctl is-active pbs-journal.service") == "active"


def test_installing_neither_enables_nor_starts_the_server_socket(installed: object) -> None:
    """One process for all connections is the administrator's choice, not the package's."""
    assert shell(installed, "systemctl is-enabled pbs-policy-server.socket") == "disabled"
    assert shell(installed, "systemctl is-active pbs-policy-server.socket") == "inactive"
    assert shell(installed, "systemctl is-active pbs-policy-server.service") == "inactive"


def test_the_policy_socket_is_postfix_only(installed: object) -> None:
    listing = shell(installed, "stat -c '%A %U %G' /var/spool/postfix/private/pbs-policy")
    assert listing == "srw------- postfix postfix"


def test_installing_byte_compiles_with_debian_python(installed: object) -> None:
    """Every module, in every subpackage: a handler would otherwise compile at each start."""
    tag = shell(installed, "python3 -c 'import sys; print(sys.implementation.cache_tag)'")
    uncompiled = shell(
        installed,
        "cd /usr/lib/python3/dist-packages/pbs_activated && find . -name '*.py' | while read -r f;"
        f' do [ -f "${{f%/*}}/__pycache__/$(basename "$f" .py).{tag}.pyc" ] || echo "$f"; done',
    )
    assert uncompiled == ""
    modules = shell(installed, "find /usr/lib/python3/dist-packages/pbs_activated -name '*.py'")
    assert len(modules.split()) > 50


def test_the_installed_command_runs(installed: object) -> None:
    assert shell(installed, "pbs-activated --version") == f"pbs-activated {project_version()}"


def test_the_reader_keeps_its_state_in_its_state_directory(installed: object) -> None:
    assert shell(installed, "test -d /var/lib/private/pbs-activated && echo yes") == "yes"


def test_an_administrators_disable_survives_an_upgrade(fresh: object) -> None:
    shell(fresh, "systemctl disable --now pbs-journal.service pbs-policy.socket")
    shell(fresh, f"apt-get install -y {UPGRADE}")
    assert shell(fresh, "dpkg-query -W -f '${Version}' pbs-activated").endswith("+upgrade1")
    assert shell(fresh, "systemctl is-enabled pbs-journal.service") == "disabled"
    assert shell(fresh, "systemctl is-enabled pbs-policy.socket") == "disabled"


def test_an_upgrade_restarts_the_reader_and_leaves_the_socket_listening(fresh: object) -> None:
    reader = shell(fresh, "systemctl show -P MainPID pbs-journal.service")
    listening_since = shell(
        fresh, "systemctl show -P ActiveEnterTimestampMonotonic pbs-policy.socket"
    )
    shell(fresh, f"apt-get install -y {UPGRADE}")
    assert shell(fresh, "systemctl is-active pbs-journal.service") == "active"
    assert shell(fresh, "systemctl show -P MainPID pbs-journal.service") != reader
    assert (
        shell(fresh, "systemctl show -P ActiveEnterTimestampMonotonic pbs-policy.socket")
        == listening_since
    )


def test_the_switch_to_the_server_socket_survives_an_upgrade(fresh: object) -> None:
    shell(fresh, TO_THE_SERVER_SOCKET)
    assert shell(fresh, ASK_THE_POLICY_SOCKET) == "action=DUNNO"
    server = shell(fresh, "systemctl show -P MainPID pbs-policy-server.service")
    assert server != "0"
    listening_since = shell(
        fresh, "systemctl show -P ActiveEnterTimestampMonotonic pbs-policy-server.socket"
    )
    shell(fresh, f"apt-get install -y {UPGRADE}")
    assert shell(fresh, "systemctl is-enabled pbs-policy-server.socket") == "enabled"
    assert shell(fresh, "systemctl is-enabled pbs-policy.socket") == "disabled"
    assert shell(fresh, "systemctl is-active pbs-policy.socket") == "inactive"
    assert (
        shell(fresh, "systemctl show -P ActiveEnterTimestampMonotonic pbs-policy-server.socket")
        == listening_since
    )
    # The running server was restarted into the new code, and answers.
    assert shell(fresh, "systemctl is-active pbs-policy-server.service") == "active"
    assert shell(fresh, "systemctl show -P MainPID pbs-policy-server.service") not in (server, "0")
    assert shell(fresh, ASK_THE_POLICY_SOCKET) == "action=DUNNO"


def test_an_upgrade_does_not_start_the_server_socket(fresh: object) -> None:
    shell(fresh, f"apt-get install -y {UPGRADE}")
    assert shell(fresh, "systemctl is-enabled pbs-policy-server.socket") == "disabled"
    assert shell(fresh, "systemctl is-active pbs-policy-server.socket") == "inactive"
    assert shell(fresh, "systemctl is-active pbs-policy.socket") == "active"


def test_remove_stops_the_services_and_keeps_configuration_and_state(fresh: object) -> None:
    shell(fresh, "apt-get remove -y pbs-activated")
    assert shell(fresh, "systemctl is-active pbs-journal.service") != "active"
    assert shell(fresh, "systemctl is-active pbs-policy.socket") != "active"
    assert shell(fresh, "test -f /etc/pbs-activated/pbs-activated.toml && echo yes") == "yes"
    assert shell(fresh, "test -d /var/lib/private/pbs-activated && echo yes") == "yes"


def test_the_policy_socket_answers_postfix_requests(installed: object) -> None:
    assert shell(installed, ASK_THE_POLICY_SOCKET) == "action=DUNNO"


def test_purge_removes_configuration_state_and_enablement(fresh: object) -> None:
    assert shell(fresh, ASK_THE_POLICY_SOCKET) == "action=DUNNO"  # a handler ran: its cache
    for path in STATE:
        assert shell(fresh, f"test -e {path} && echo there") == "there", path
    shell(fresh, "apt-get purge -y pbs-activated")
    for path in ("/etc/pbs-activated", *STATE):
        assert shell(fresh, f"test -e {path} || test -L {path} || echo gone") == "gone", path
    wants = shell(
        fresh,
        "ls /etc/systemd/system/sockets.target.wants /etc/systemd/system/multi-user.target.wants",
    )
    assert "pbs-" not in wants


def test_remove_stops_the_server_socket_and_the_server(fresh: object) -> None:
    shell(fresh, TO_THE_SERVER_SOCKET)
    assert shell(fresh, ASK_THE_POLICY_SOCKET) == "action=DUNNO"
    assert shell(fresh, "systemctl is-active pbs-policy-server.service") == "active"
    shell(fresh, "apt-get remove -y pbs-activated")
    assert shell(fresh, "systemctl is-active pbs-policy-server.socket") != "active"
    assert shell(fresh, "systemctl is-active pbs-policy-server.service") != "active"
    assert shell(fresh, ASK_THE_POLICY_SOCKET) != "action=DUNNO"


def test_purge_removes_the_server_sockets_enablement(fresh: object) -> None:
    shell(fresh, TO_THE_SERVER_SOCKET)
    assert "pbs-policy-server.socket" in shell(fresh, "ls /etc/systemd/system/sockets.target.wants")
    shell(fresh, "apt-get purge -y pbs-activated")
    assert "pbs-" not in shell(fresh, "ls /etc/systemd/system/sockets.target.wants")


def without_postfix_private_directory(container: object) -> None:
    """Postfix not yet there: its private directory gone, so the socket cannot start."""
    shell(container, "systemctl stop postfix pbs-policy.socket")
    shell(container, "mv /var/spool/postfix/private /var/spool/postfix/private.away")
    shell(container, "systemctl start pbs-policy.socket")
    assert shell(container, "systemctl is-active pbs-policy.socket") != "active"


def test_the_socket_starts_once_postfix_is_installed_after_the_package(fresh: object) -> None:
    without_postfix_private_directory(fresh)
    shell(fresh, f"dpkg -i {STAND_IN}")
    assert shell(fresh, "systemctl is-active pbs-policy.socket") == "active"


def test_installing_postfix_later_does_not_start_a_disabled_socket(fresh: object) -> None:
    """Disabled as pbs-activated(8) says, `--now`: that stops pbs-policy.path too (its
    PartOf=). A bare `disable` leaves the waiting path unit to start the socket once
    the directory is there, and systemctl warns of it ("its triggering units are still
    active"), as for any socket or service disabled under an active trigger."""
    without_postfix_private_directory(fresh)
    shell(fresh, "systemctl disable --now pbs-policy.socket")
    shell(fresh, f"dpkg -i {STAND_IN}")
    assert shell(fresh, "systemctl is-active pbs-policy.socket") != "active"


def test_the_shipped_defaults_reach_debians_redis_server(installed: object) -> None:
    """As installed, with the conffile untouched, the commands talk to the local Redis."""
    assert shell(installed, "pbs-activated check 192.0.2.77") == "DUNNO"
    shell(installed, "pbs-activated grant 192.0.2.77 --user alice --lifetime 60")
    try:
        assert shell(installed, "pbs-activated check 192.0.2.77") == "OK"
    finally:
        shell(installed, "pbs-activated revoke 192.0.2.77")


def test_installing_postfix_later_starts_the_server_socket_if_chosen(fresh: object) -> None:
    """The trigger starts the socket the administrator enabled, and not the other."""
    shell(fresh, TO_THE_SERVER_SOCKET)
    shell(fresh, "systemctl stop postfix pbs-policy-server.socket")
    shell(fresh, "mv /var/spool/postfix/private /var/spool/postfix/private.away")
    shell(fresh, f"dpkg -i {STAND_IN}")
    assert shell(fresh, "systemctl is-active pbs-policy-server.socket") == "active"
    assert shell(fresh, "systemctl is-active pbs-policy.socket") == "inactive"
    assert shell(fresh, ASK_THE_POLICY_SOCKET) == "action=DUNNO"
