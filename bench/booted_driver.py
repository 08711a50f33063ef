"""The in-container half of bench/booted_units.py: connects to installed sockets and
reads what each start cost from the kernel's own counters.

Runs under the container's python3 as root (standard library only), reads a JSON
spec on stdin and prints one JSON object. Why inside: the connections must be
made where Postfix makes them (the socket in /var/spool/postfix/private), and
the counters are the container's cgroup2 files, which its systemd creates:

- an Accept=yes socket's instances live in its template's slice (e.g.
  `system-pbs\\x2dpolicy.slice`); with CollectMode=inactive-or-failed each
  instance's cgroup is gone when it ends, but its CPU stays counted in the slice,
  which lives as long as one instance does: so one connection is held open for
  the whole run (`held`), and the slice's cpu.stat is read before and after a
  batch. systemd 255 and later run systemd-executor (the sandbox's set-up) in
  that cgroup; systemd 252 builds the sandbox in the child it forked, also moved
  into the cgroup first;
- PID 1 (init.scope) forks, watches and collects every instance;
- journald (systemd-journald.service) writes what PID 1 and the unit log.

cgroup2 keeps usage_usec for every group, with or without the cpu controller,
so this works on the hybrid layout (the v1 controllers are read-only inside the
container, there is no memory.current per unit: memory is read per process from
/proc/PID/smaps_rollup).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

UNIFIED = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
PID1 = UNIFIED + "/init.scope"
JOURNALD = UNIFIED + "/system.slice/systemd-journald.service"
SETTLE_SECONDS = 10.0


def usage_seconds(group: str) -> float:
    """CPU time (user + system) a cgroup and all its past and present children used."""
    try:
        with open(group + "/cpu.stat") as file:
            for line in file:
                name, value = line.split()
                if name == "usage_usec":
                    return int(value) / 1e6
    except FileNotFoundError:
        return 0.0
    raise RuntimeError(f"no usage_usec in {group}/cpu.stat")


def children(group: str) -> list[str]:
    try:
        return [entry.path for entry in os.scandir(group) if entry.is_dir()]
    except FileNotFoundError:
        return []


def pids_in(group: str) -> list[int]:
    found = []
    for directory in [group, *children(group)]:
        try:
            with open(directory + "/cgroup.procs") as file:
                found += [int(line) for line in file if line.strip()]
        except FileNotFoundError:
            pass
    return found


def ask(path: str, request: bytes) -> tuple[socket.socket, float, bytes]:
    """Connect, send one request, wait for the whole answer: the open socket, the
    seconds from connect() to the answer's last byte, and the answer."""
    started = time.perf_counter()
    connection = socket.socket(socket.AF_UNIX)
    connection.settimeout(30)
    connection.connect(path)
    connection.sendall(request)
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = connection.recv(4096)
        if not chunk:
            raise RuntimeError(f"{path} closed the connection after {answer!r}")
        answer += chunk
    return connection, time.perf_counter() - started, answer


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def counters(group: str) -> dict[str, float]:
    return {
        "unit": usage_seconds(group),
        "pid1": usage_seconds(PID1),
        "journald": usage_seconds(JOURNALD),
    }


def difference(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """Milliseconds per start, per part."""
    return {part: (after[part] - before[part]) * 1000 / count for part in before}


def accepted_batch(unit: dict[str, str], request: bytes, count: int) -> dict[str, object]:
    """count sequential connections to an Accept=yes socket, each its own instance."""
    slice_group = UNIFIED + "/" + unit["slice"]
    before = counters(slice_group)
    latencies = []
    for _ in range(count):
        connection, seconds, _ = ask(unit["socket"], request)
        connection.close()
        latencies.append(seconds * 1000)
        # One instance at a time, as at a quiet site: the next connection comes
        # once this one's instance is gone (the held instance stays).
        wait_until(lambda: len(children(slice_group)) <= 1, "the instance to end")
    after = counters(slice_group)
    return {"cpu_ms": difference(before, after, count), "answer_ms": latencies}


def server_batch(unit: dict[str, str], request: bytes, count: int) -> dict[str, object]:
    """count cold starts of an Accept=no server: connect (the socket starts it), answer,
    read its cgroup's CPU, SIGTERM it (a clean stop: Restart=on-failure leaves it),
    wait for its cgroup to go. Also one warm connection per start."""
    group = UNIFIED + "/" + unit["group"]
    before = counters(group)
    unit_cpu = 0.0
    latencies, warm = [], []
    for _ in range(count):
        connection, seconds, _ = ask(unit["socket"], request)
        latencies.append(seconds * 1000)
        second, warm_seconds, _ = ask(unit["socket"], request)
        warm.append(warm_seconds * 1000)
        connection.close()
        second.close()
        main_pids = pids_in(group)
        unit_cpu += usage_seconds(group)
        for pid in main_pids:
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not os.path.isdir(group), "the server to stop")
    after = counters(group)
    after["unit"] = before["unit"] + unit_cpu
    return {"cpu_ms": difference(before, after, count), "answer_ms": latencies, "warm_ms": warm}


def memory(pids: list[int]) -> dict[str, float]:
    """Mean Rss and Pss (KiB) of the processes."""
    totals = {"Rss": 0, "Pss": 0}
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                name = line.split(":")[0]
                if name in totals:
                    totals[name] += int(line.split()[1])
    return {name: value / len(pids) for name, value in totals.items()}


def held_memory(unit: dict[str, str], request: bytes, count: int) -> dict[str, object]:
    """Memory of the processes serving 1 and then count connections held at once."""
    group = UNIFIED + "/" + (unit.get("slice") or unit["group"])
    wait_until(lambda: not children(group), "the earlier instances to end")
    found: dict[str, object] = {}
    for held in (1, count):
        connections = [ask(unit["socket"], request)[0] for _ in range(held)]
        try:
            pids = pids_in(group)
            found[str(held)] = {"processes": len(pids), "per_process_kib": memory(pids)}
        finally:
            for connection in connections:
                connection.close()
        if unit.get("slice"):
            wait_until(lambda: not children(group), "the held instances to end")
    return found


def main() -> None:
    spec = json.load(sys.stdin)
    request = spec["request"].encode()
    units: dict[str, dict[str, str]] = spec["units"]
    held = {
        name: ask(unit["socket"], request)[0] for name, unit in units.items() if unit.get("slice")
    }
    result: dict[str, object] = {"rounds": []}
    names = list(units)
    for round_number in range(spec["rounds"]):
        order = names if round_number % 2 == 0 else names[::-1]
        batch = {}
        for name in order:
            measure = accepted_batch if units[name].get("slice") else server_batch
            batch[name] = measure(units[name], request, spec["count"])
        result["rounds"].append(batch)  # type: ignore[attr-defined]
    for connection in held.values():
        connection.close()
    result["memory"] = {
        name: held_memory(unit, request, spec["held"]) for name, unit in units.items()
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
