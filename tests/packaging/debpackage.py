"""Helpers of the package's checks, in a module of its own name.

Not in conftest.py: test modules importing `conftest` get whichever conftest.py
pytest loaded first (tests/system has one too).
"""

from __future__ import annotations

import os
import re
import subprocess

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
