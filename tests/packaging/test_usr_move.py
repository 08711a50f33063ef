"""Upgrading from units under /lib (0.1.0) to units under /usr/lib loses nothing.

0.1.0 shipped its units in /lib/systemd/system; they now go to /usr/lib/systemd/system
(trixie's lintian rejects the aliased /lib). On a merged-/usr system both names are
one file, and dpkg removes the paths the old version had and the new one lacks:
/lib/systemd/system/pbs-policy.socket is then the very file just unpacked. dpkg
spares a file that is one of the package's new files under another name (it
compares device and inode), which is why DEP 17 counts a move within one package
as safe; its file loss needs the move to cross packages. This shows it on a booted
system, as an administrator would upgrade: the old layout installed and running,
then the new package installed over it.

The old layout is this very package with its units moved back under lib/, the new
one the same with a version just above, so the upgrade changes nothing but the
units' path (and the maintainer scripts see no upgrade from an older release).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from debpackage import (
    ALIASED_UNIT_DIRECTORY,
    ASK_THE_POLICY_SOCKET,
    UNIT_DIRECTORY,
    project_version,
    repack,
    shell,
    units_under_lib,
    versioned,
)
from system.container import missing_requirements

pytestmark = pytest.mark.system

UNITS = (
    "pbs-policy.socket",
    "pbs-policy@.service",
    "pbs-policy-server.socket",
    "pbs-policy-server.service",
    "pbs-journal.service",
)
OLD = "/root/pbs-activated-units-under-lib.deb"
NEW = "/root/pbs-activated.deb"
NEW_VERSION = f"{project_version()}+units.under.usr"


@dataclass(frozen=True)
class Upgrade:
    """A booted system that ran the old layout and was then upgraded to this package."""

    container: object
    listed_before: list[str]
    """`dpkg -L pbs-activated` of the old version, before the upgrade."""


@pytest.fixture(scope="module")
def upgrade(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    from system.container import Container

    directory = tmp_path_factory.mktemp("usr-move")
    old = repack(deb, directory / "old.deb", directory / "old", units_under_lib)
    new = repack(deb, directory / "new.deb", directory / "new", versioned(NEW_VERSION))
    with Container() as container:
        container.copy_in(old, OLD)
        container.copy_in(new, NEW)
        container.run(f"apt-get install -y {OLD}", timeout=300)
        listed_before = shell(container, "dpkg -L pbs-activated").splitlines()
        container.run(f"apt-get install -y {NEW}", timeout=300)
        container.run("systemctl daemon-reload")
        yield Upgrade(container, listed_before)


def test_the_system_has_a_merged_usr(upgrade: Upgrade) -> None:
    """/lib is /usr/lib here: the case where a removed old path is the new file."""
    assert shell(upgrade.container, "readlink /lib") == "usr/lib"


def test_the_old_version_had_its_units_under_lib(upgrade: Upgrade) -> None:
    assert f"/{ALIASED_UNIT_DIRECTORY}/pbs-policy.socket" in upgrade.listed_before


def test_the_upgrade_installed_the_new_version(upgrade: Upgrade) -> None:
    version = shell(upgrade.container, "dpkg-query -W -f '${Version} ${Status}' pbs-activated")
    assert version == f"{NEW_VERSION} install ok installed"


@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_file_is_still_there(upgrade: Upgrade, unit: str) -> None:
    assert shell(upgrade.container, f"test -f /{UNIT_DIRECTORY}/{unit} && echo there") == "there"


@pytest.mark.parametrize("unit", UNITS)
def test_dpkg_owns_the_unit_at_its_new_path_only(upgrade: Upgrade, unit: str) -> None:
    listed = shell(upgrade.container, "dpkg -L pbs-activated").splitlines()
    assert f"/{UNIT_DIRECTORY}/{unit}" in listed
    assert f"/{ALIASED_UNIT_DIRECTORY}/{unit}" not in listed


def test_the_policy_socket_stays_enabled(upgrade: Upgrade) -> None:
    assert shell(upgrade.container, "systemctl is-enabled pbs-policy.socket") == "enabled"


def test_the_policy_socket_keeps_listening_and_answers(upgrade: Upgrade) -> None:
    assert shell(upgrade.container, "systemctl is-active pbs-policy.socket") == "active"
    assert shell(upgrade.container, ASK_THE_POLICY_SOCKET).startswith("action=")


def test_the_reader_runs_after_the_upgrade(upgrade: Upgrade) -> None:
    assert shell(upgrade.container, "systemctl is-active pbs-journal.service") == "active"
