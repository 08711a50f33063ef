"""Helpers of the package's checks, in a module of its own name.

Not in conftest.py: test modules importing `conftest` get whichever conftest.py
pytest loaded first (tests/system has one too).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

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


UNIT_DIRECTORY = "usr/lib/systemd/system"
"""Where the package ships its units (debian/rules moves them there from lib/)."""

ALIASED_UNIT_DIRECTORY = "lib/systemd/system"
"""Where 0.1.0 shipped them: /lib, an alias of /usr/lib on a merged-/usr system."""


def repack(deb: Path, target: Path, tree: Path, *changes: Callable[[Path], None]) -> Path:
    """`deb` unpacked into `tree` (files and DEBIAN/), changed, and built again as `target`."""
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    for change in changes:
        change(tree)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)],
        check=True,
        capture_output=True,
    )
    return target


def units_under_lib(tree: Path) -> None:
    """Move an unpacked package's units back under lib/systemd/system, as 0.1.0 had them."""
    (tree / ALIASED_UNIT_DIRECTORY).parent.mkdir(parents=True)
    (tree / UNIT_DIRECTORY).rename(tree / ALIASED_UNIT_DIRECTORY)
    (tree / UNIT_DIRECTORY).parent.rmdir()
    md5sums = tree / "DEBIAN/md5sums"
    md5sums.write_text(
        md5sums.read_text().replace(f"  {UNIT_DIRECTORY}/", f"  {ALIASED_UNIT_DIRECTORY}/")
    )


def versioned(version: str) -> Callable[[Path], None]:
    """A change for `repack`: the package's Version: field set to `version`."""

    def change(tree: Path) -> None:
        control = tree / "DEBIAN/control"
        text = re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.M)
        control.write_text(text)

    return change


# For the tests that boot a container with the package (test_install, test_usr_move,
# test_poll_limit).

ASK_THE_POLICY_SOCKET = (
    'python3 -c "import socket; s = socket.socket(socket.AF_UNIX);'
    " s.connect('/var/spool/postfix/private/pbs-policy');"
    " s.sendall(b'request=smtpd_access_policy\\nprotocol_state=RCPT\\n"
    "client_address=192.0.2.1\\n\\n'); print(s.recv(200).decode().strip())\""
)
"""One RCPT request to the policy socket from inside the container; prints the answer."""


def shell(container: object, command: str, timeout: float = 60) -> str:
    """A shell command's output in a booted container, whatever its exit status."""
    result = container.run(command, check=False, timeout=timeout)  # type: ignore[attr-defined]
    return str(result.stdout).strip()
