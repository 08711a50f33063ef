"""Fixtures for the package's checks: the .deb that `make deb` builds, unpacked.

Why session scope: building the package takes a few seconds and every check here
reads the same artefact. `make deb` rebuilds only when a source file changed, so
a warm run reuses dist/.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from support import REPO

DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""Debian's PATH: a python3 from another prefix first on PATH breaks pybuild."""


def project_version() -> str:
    """The version as pyproject.toml, its one home, gives it."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
    assert match, "pyproject.toml has no version line"
    return match.group(1)


def debian_environment() -> dict[str, str]:
    """This process's environment with Debian's PATH and no inherited MAKEFLAGS."""
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    environment["PATH"] = DEBIAN_PATH
    return environment


def run(command: list[str], **environment: str) -> subprocess.CompletedProcess[str]:
    """Run a command with Debian's PATH (and `environment`); return its result, whatever it is."""
    return subprocess.run(
        command, capture_output=True, text=True, env=debian_environment() | environment
    )


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
