"""What every doctor check returns and uses: the statuses, `Finding`, and the `Host`.

A module of its own, below both admin/doctor/examine.py (which runs the checks) and the
check modules (doctor.postfix, doctor.systemd, doctor.logs, doctor.store),
so that a check never imports the module that runs it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import NamedTuple

OK = "ok"
WARNING = "warning"
ERROR = "error"
UNKNOWN = "unknown"

EXIT_STATUS = {OK: 0, WARNING: 1, ERROR: 2, UNKNOWN: 3}
"""The monitoring-plugin convention (Nagios, Icinga, monitoring-plugins)."""

TOOL_TIMEOUT = 30.0
"""Seconds any one tool may take; `journalctl` over a day of a busy host is the slowest."""


class Finding(NamedTuple):
    """What one check found: its name (`postfix.position`...), status, what and the fix."""

    check: str
    status: str
    message: str
    fix: str = ""


class Host:
    """The tools of the host doctor looks at; tests give canned answers instead."""

    def run(self, command: Sequence[str], timeout: float = TOOL_TIMEOUT) -> tuple[int, str]:
        """Run a tool; (exit status, standard output), 127 when it is not installed."""
        try:
            result = subprocess.run(
                list(command),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return 127, ""
        except subprocess.TimeoutExpired:
            return 124, ""
        return result.returncode, result.stdout
