"""Debian's own package checker finds nothing wrong with the .deb, on every release.

The one .deb installs on Debian 12 and Debian 13, and each release's lintian knows
other things: trixie's (2.122) reports files under the aliased /lib as errors,
which bookworm's (2.116) accepts. So each release's lintian checks it, the host's
own and the other release's in its cached root (releasetools.py).

No lintian override is needed today. Should one become needed, it goes into
packaging/debian/pbs-activated.lintian-overrides with a comment above it saying
why the tag does not apply; the test below holds every override to that.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from debpackage import ALIASED_UNIT_DIRECTORY, repack, units_under_lib
from releasetools import Tools
from support import REPO

OVERRIDES = REPO / "packaging/debian/pbs-activated.lintian-overrides"


def lintian(tools: Tools, deb: Path, shared: Path) -> subprocess.CompletedProcess[str]:
    """`tools`' lintian on a copy of `deb` in `shared`, overridden tags shown as O:."""
    shutil.copy(deb, shared / deb.name)
    return tools.run(
        lambda seen: [
            "lintian",
            "--fail-on",
            "error,warning",
            "--display-level",
            ">=warning",
            "--show-overrides",
            str(seen / deb.name),
        ],
        shared,
    )


@pytest.fixture(scope="session")
def report(
    deb: Path, tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """One lintian run per release, read by every check below."""
    return lintian(tools, deb, tmp_path_factory.mktemp(f"lintian-{tools.release}"))


def test_lintian_reports_no_error_and_no_warning(
    report: subprocess.CompletedProcess[str],
) -> None:
    complaints = [line for line in report.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert report.returncode == 0 and not complaints, report.stdout + report.stderr


def test_lintian_overrides_nothing(report: subprocess.CompletedProcess[str]) -> None:
    """Clean without hiding anything: no tag is silenced by an override."""
    overridden = [line for line in report.stdout.splitlines() if line.startswith("O:")]
    assert not overridden, report.stdout


def test_every_lintian_override_says_why() -> None:
    """An override is a claim that lintian is wrong here: the comment above it says why."""
    if not OVERRIDES.exists():
        return
    previous = ""
    for line in OVERRIDES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert previous.startswith("#"), f"override without a comment above it: {line}"
        previous = line


def test_trixies_lintian_rejects_units_under_the_aliased_lib(
    deb: Path, trixie_tools: Tools, tmp_path: Path
) -> None:
    """The check is real, and the reason the units moved: the same package with its
    units under lib/systemd/system, as 0.1.0 shipped them, fails trixie's lintian."""
    (tmp_path / "shared").mkdir()
    old_layout = repack(deb, tmp_path / deb.name, tmp_path / "tree", units_under_lib)
    result = lintian(trixie_tools, old_layout, tmp_path / "shared")
    assert result.returncode != 0
    tag = f"E: pbs-activated: aliased-location [{ALIASED_UNIT_DIRECTORY}/pbs-policy.socket]"
    assert tag in result.stdout.splitlines(), result.stdout
