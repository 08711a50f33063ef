"""Fixtures for the package's checks: the .deb that `make deb` builds, unpacked, and
each supported release's checkers (lintian, systemd-analyze) to run on it.

Why session scope: building the package takes a few seconds and every check here
reads the same artefact. `make deb` rebuilds only when a source file changed, so
a warm run reuses dist/. Another release's checkers live in a root file system
bootstrapped once and cached (releasetools.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from debpackage import project_version, run
from releasetools import RELEASES, RootError, Tools, host_release, missing_requirements, tools_of
from support import REPO


@pytest.fixture(scope="session")
def deb() -> Path:
    """The built package, dist/pbs-activated_<version>_all.deb, fresh for the sources."""
    result = run(["make", "-C", str(REPO), "deb"])
    if result.returncode != 0:
        pytest.fail(f"make deb failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    path = REPO / "dist" / f"pbs-activated_{project_version()}_all.deb"
    assert path.is_file(), f"make deb did not leave {path}"
    return path


@pytest.fixture(scope="session")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files under a fresh root directory (`dpkg-deb -x`)."""
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def control(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's control area: control, conffiles, maintainer scripts (`dpkg-deb -e`)."""
    directory = tmp_path_factory.mktemp("DEBIAN")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(directory)], check=True)
    return directory


def release_tools(release: str) -> Tools:
    """`release`'s checkers, or the test skipped (not root) or failed (no root built)."""
    if release != host_release():
        reason = missing_requirements()
        if reason:
            pytest.skip(f"{release}'s tools: {reason}")
    try:
        return tools_of(release)
    except RootError as error:
        pytest.fail(f"could not build {release}'s root of tools: {error}")


@pytest.fixture(scope="session", params=RELEASES)
def tools(request: pytest.FixtureRequest) -> Tools:
    """Each supported release's lintian and systemd-analyze in turn: the host's own
    for the host's release, a cached root's for the other (bootstrapped on first use)."""
    return release_tools(request.param)


@pytest.fixture(scope="session")
def trixie_tools() -> Tools:
    """Debian 13's checkers, for checks of what only they know."""
    return release_tools("trixie")
