"""The servers the bench compares, each started in a private directory.

- `start_redis`: one redis-server (tests/support.py's) on a free 127.0.0.1 port
  and a unix socket, shared by everything.
- `ActivatedService`: systemd-socket-activate --accept --inetd on a unix socket,
  spawning one process per connection: our handler, exactly as the unit's
  ExecStart= runs it (support.unit_command), or the floor.
- `SeedServer`: the 2010 article's node.js server, extracted from the article at
  run time and run with npm's redis@3 in a temporary folder (never committed).
- `AuditSink`: a datagram socket standing in for journald, counting entries.

Everything listens on loopback or unix sockets inside the bench's own directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support import (
    PYTHON,
    REPO,
    RedisServer,
    alive,
    children,
    free_port,
    unit_command,
)

BENCH = REPO / "bench"
SEED_ARTICLE = REPO.parent / "shared" / "seed" / "000_042ba18a9c622335.txt"
UNIT = "pbs-policy@.service"
SERVER_UNIT = "pbs-policy-server.service"

GRANTED_ADDRESS = "192.0.2.10"
"""The client address every bench request comes from; granted in Redis for both servers."""

STARTUP_TIMEOUT = 20.0


def wait_for(condition, what: str, process: subprocess.Popen[bytes] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until true; fail early if `process` died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {STARTUP_TIMEOUT:g} s")
        time.sleep(0.01)


def rss_kib(pid: int) -> int | None:
    """Return a process's resident memory (VmRSS) in KiB, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def stop_process(process: subprocess.Popen[bytes], group: bool = True) -> None:
    """Stop a process we started (its whole session when `group`) and reap it."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
            process.wait()


def start_redis(directory: Path) -> RedisServer:
    """A redis-server on a free loopback port and its unix socket, no persistence."""
    server = RedisServer(directory, port=free_port(), arguments=("--maxclients", "10000"))
    server.start()
    return server


class AuditSink:
    """bench/audit_sink.py in its own process: journald's socket, counting entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unusual = path.with_name("unusual-entries.txt")
        self.process = subprocess.Popen(
            [PYTHON, str(BENCH / "audit_sink.py"), str(path), str(self.unusual)],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        wait_for(path.exists, "audit sink", self.process)

    def unusual_entries(self) -> list[str]:
        """MESSAGE lines of the entries that were not an OK or DUNNO decision."""
        try:
            return self.unusual.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def stop(self) -> int:
        """Stop the sink; return how many entries it received."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=10)
        return int(output or 0)


def shipped_handler_command(directory: Path, unit: str = UNIT) -> list[str]:
    """The unit's ExecStart=, pointed at this checkout (its launcher copied into `directory`).

    The bench measures what ships: if the unit's command line changes, so does
    the bench, and a command that cannot be pointed at the checkout is an error
    (support.unit_command) rather than a silent measurement of something else.
    """
    return unit_command(unit, directory)


class ActivatedService:
    """systemd-socket-activate spawning `command` once per connection on a unix socket.

    With `accept=False` it starts `command` once, on the first connection, and
    hands it the listening socket as fd 3 (what a unit with Accept=no does).
    """

    def __init__(
        self, path: Path, command: list[str], environment: dict[str, str], accept: bool = True
    ) -> None:
        self.path = path
        arguments = ["systemd-socket-activate", "-l", str(path)]
        if accept:
            arguments[1:1] = ["--accept", "--inetd"]
        for name, value in environment.items():
            arguments += ["-E", f"{name}={value}"]
        self.process = subprocess.Popen(
            arguments + command, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for(path.exists, "systemd-socket-activate", self.process)

    @property
    def listener_pid(self) -> int:
        return self.process.pid

    def handler_pids(self) -> list[int]:
        """The handler processes now running under the listener (zombies included)."""
        return children(self.process.pid)

    def live_handlers(self) -> list[int]:
        return [pid for pid in self.handler_pids() if alive(pid)]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no handler runs any more; False if some still do after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.live_handlers():
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        stop_process(self.process)


def extract_seed_source(article: Path = SEED_ARTICLE) -> str:
    """Return the node.js server of the 2010 article, as printed in it.

    The article indents its code blocks with one leading space and interleaves
    prose (not indented) between them; the server runs from `var net = require`
    to its `server.listen(...)` line.
    """
    lines = article.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("var net = require"))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith("server.listen("))
    code = [line[1:] for line in lines[start : end + 1] if line.startswith(" ") or not line.strip()]
    return "\n".join(code) + "\n"


def configure_seed(source: str, policy_path: Path, redis_port: int) -> str:
    """Point the seed at our socket and Redis; nothing else of it changes.

    node listens on a unix socket when given a path instead of a port, the same
    transport the other servers use. Redis is named as 127.0.0.1, since
    'localhost' may resolve to ::1 first where redis-server does not listen.
    """
    replacements = {
        "var puertoplcy = 10000;": f"var puertoplcy = {json.dumps(str(policy_path))};",
        "var puertoredis = 6379;": f"var puertoredis = {redis_port};",
        "var hostredis = 'localhost';": "var hostredis = '127.0.0.1';",
    }
    for old, new in replacements.items():
        if source.count(old) != 1:
            raise RuntimeError(f"the seed no longer has {old!r}: update bench/servers.py")
        source = source.replace(old, new)
    return source


class SeedServer:
    """The article's server under node, with npm's redis@3, in `directory`."""

    def __init__(self, directory: Path, policy_path: Path, redis_port: int) -> None:
        self.path = policy_path
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "pbs_filter.js"
        script.write_text(configure_seed(extract_seed_source(), policy_path, redis_port))
        if not (directory / "node_modules" / "redis").is_dir():
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent", "--no-save", "redis@3"],
                cwd=directory,
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=300,
            )
        # The seed logs every request to the console: to /dev/null, as a daemon would.
        self.process = subprocess.Popen(
            ["node", str(script)],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(policy_path.exists, "the seed's node server", self.process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
