"""Interpreters with each python3-redis that Debian ships: 4.3.4 (Debian 12), 6.1.0 (Debian 13).

The reader and the CLI run redis-py, whose behaviour changed between them
(retries, CLIENT SETINFO), so their tests run under both: Debian's own
/usr/bin/python3 for the host's version, and a virtualenv for the other, made
once in .venv-redis/ (gitignored) with redis from PyPI and Debian's
systemd-python seen through --system-site-packages.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess

from support import PYTHON, REPO

REDIS_PY_VERSIONS = ("4.3.4", "6.1.0")
"""Debian 12's python3-redis and Debian 13's."""

VENVS = REPO / ".venv-redis"
"""One virtualenv per redis-py version that Debian's python3 does not have (gitignored)."""


def interpreter_with_redis_py(version: str) -> str:
    """Return Debian's python3 if its python3-redis is `version`, else a cached venv's.

    Made under a lock, so that two test runs at once build it once; a venv whose
    pip failed half-way has no stamp and is made again.
    """
    if imported_redis_py(PYTHON) == version:
        return PYTHON
    VENVS.mkdir(exist_ok=True)
    venv = VENVS / version
    python = venv / "bin" / "python"
    stamp = venv / "complete"
    with open(VENVS / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", venv], check=True)
            pip = subprocess.run(
                [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
                + [f"redis=={version}"],
                capture_output=True,
                text=True,
            )
            if pip.returncode != 0:
                raise RuntimeError(f"cannot install redis=={version} from PyPI: {pip.stderr}")
            stamp.touch()
    assert imported_redis_py(str(python)) == version
    return str(python)


def imported_redis_py(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import redis; print(redis.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def other_release_version() -> str:
    """The version Debian's python3 here does not have: the other release's."""
    own = imported_redis_py(PYTHON)
    return next(version for version in REDIS_PY_VERSIONS if version != own)
