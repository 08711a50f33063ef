"""CPU time per request of every process behind a throughput figure.

A steady figure on two cores is set by how much CPU each request costs all the
processes it passes through: the service, Redis, journald's stand-in and the
load client. `CpuMeter` reads their user + system time from /proc at the start
and the end of each timed run and adds the difference up per role, so the
bench can say where a figure's time goes and what two cores can give at most.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

Snapshot = dict[str, dict[int, float]]
"""role -> pid -> CPU seconds so far."""


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, from the state on; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"


def cpu_seconds(pid: int) -> float | None:
    """User + system time of a process so far (all its threads); None if it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime


class CpuMeter:
    """Adds up, per role, the CPU time of the processes `roles()` names during timed runs.

    `roles` is asked at both ends of a run, since a per-connection service's
    processes are known only once its connections are open; a process counts
    if it is there at both ends (the held connections keep the same handlers).
    """

    def __init__(self, roles: Callable[[], dict[str, list[int]]]) -> None:
        self.roles = roles
        self.seconds: dict[str, float] = {}
        self.requests = 0
        self._started: Snapshot = {}

    def _snapshot(self) -> Snapshot:
        snapshot: Snapshot = {}
        for role, pids in self.roles().items():
            times = {pid: cpu_seconds(pid) for pid in pids}
            snapshot[role] = {pid: t for pid, t in times.items() if t is not None}
        return snapshot

    def start(self) -> None:
        self._started = self._snapshot()

    def stop(self, requests: int) -> None:
        for role, ended in self._snapshot().items():
            started = self._started.get(role, {})
            spent = sum(ended[pid] - started[pid] for pid in ended if pid in started)
            self.seconds[role] = self.seconds.get(role, 0.0) + spent
        self.requests += requests

    def microseconds_per_request(self) -> dict[str, float]:
        """Each role's CPU per request over every run measured, in microseconds."""
        if not self.requests:
            return {}
        return {role: seconds * 1e6 / self.requests for role, seconds in self.seconds.items()}
