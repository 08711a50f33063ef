"""The handler as production runs it: its unit's ExecStart= (support.unit_command),
one process per connection, started by `systemd-socket-activate --accept --inetd`
(systemd's own tool, the same accept logic as a socket unit with Accept=yes); and
the policy server, its unit's ExecStart= started by `systemd-socket-activate`
without --accept, as a socket unit with Accept=no."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from support import alive, children, encode_request, unit_command


class PolicyClient:
    """One Postfix-like connection: requests one after another on the same socket."""

    def __init__(self, path: Path, timeout: float = 10) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.settimeout(timeout)
        self.socket.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def send_until_closed(self, data: bytes) -> None:
        """Send what the handler will refuse part-way: it may close before taking it all."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.socket.sendall(data)

    def reply(self) -> str | None:
        """Read one reply; return its action, or None if the handler closed the connection.

        A handler that closes with our bytes still unread makes the kernel reset
        the connection: that is a close too.
        """
        while b"\n\n" not in self.buffer:
            try:
                chunk = self.socket.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        reply, _, self.buffer = self.buffer.partition(b"\n\n")
        text = reply.decode()
        assert text.startswith("action="), text
        return text.removeprefix("action=")

    def ask(self, **attributes: str) -> str | None:
        """Send one request and return the action answered."""
        self.send(encode_request(**attributes))
        return self.reply()

    def closed_by_peer(self, timeout: float = 5) -> bool:
        """Tell whether the handler closed its end (EOF) within `timeout`."""
        self.socket.settimeout(timeout)
        try:
            return self.socket.recv(1) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.socket.close()


class PolicyService:
    """systemd-socket-activate listening on a unix socket, spawning our handler per connection."""

    def __init__(
        self,
        directory: Path,
        config: Path,
        audit_socket: Path | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """`wrapper`: a command the unit's command runs under (`env NAME=VALUE`, a netns)."""
        self.path = directory / "policy.sock"
        self.wake_path = wake_socket_path(directory)
        arguments = ["systemd-socket-activate", "--accept", "--inetd", "-l", str(self.path)]
        arguments += _environment_options(config, audit_socket, self.wake_path)
        arguments += [*wrapper, *unit_command("pbs-policy@.service", directory)]
        self.process = subprocess.Popen(arguments, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while not listening(self.path):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("systemd-socket-activate did not start")
            time.sleep(0.01)

    def connect(self) -> PolicyClient:
        return PolicyClient(self.path)

    def handler_pids(self) -> list[int]:
        """PIDs of the handler processes currently running under the listener."""
        return children(self.process.pid)

    def wait_for_no_handlers(self, timeout: float = 5) -> bool:
        """Wait until every handler has exited (and been reaped by the listener)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [pid for pid in self.handler_pids() if alive(pid)]
            if not pids:
                return True
            time.sleep(0.02)
        return False

    def __enter__(self) -> PolicyService:
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


class ServerService:
    """`pbs-activated policy-server` as a socket unit with Accept=no starts it.

    systemd-socket-activate without --accept listens on a unix socket and, at the
    first connection, execs the server in its own process (the same PID) with the
    listening socket as fd 3, LISTEN_FDS=1 and LISTEN_PID=that PID: what systemd
    passes to an Accept=no service. Unlike systemd, which keeps the listening
    socket and starts the service again at the next connection, the tool hands its
    only listener over, so once the server has exited (idle) the path refuses
    connections. That suits the tests: one server per test, and an exit is seen
    as the process ending.

    With `accept=True` it passes each accepted connection as fd 3 instead, as a
    socket unit with Accept=yes would: the misconfiguration the server refuses.
    The server's stderr (and the tool's log) goes to a file, `stderr()`.
    """

    def __init__(
        self,
        directory: Path,
        config: Path,
        audit_socket: Path | None = None,
        accept: bool = False,
    ) -> None:
        self.path = directory / "policy-server.sock"
        self.stderr_path = directory / "policy-server.stderr"
        arguments = ["systemd-socket-activate", *(["--accept"] if accept else []), "-l"]
        self.wake_path = wake_socket_path(directory)
        arguments += [str(self.path), *_environment_options(config, audit_socket, self.wake_path)]
        arguments += unit_command("pbs-policy-server.service", directory)
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(arguments, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 10
        while not listening(self.path):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("systemd-socket-activate did not start: " + self.stderr())
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        """The listener's PID, which is the server's once the first connection came."""
        return self.process.pid

    def connect(self) -> PolicyClient:
        return PolicyClient(self.path)

    def serving(self) -> bool:
        """Tell whether the listener has become the server (exec'd Python) and still runs."""
        try:
            return "python" in os.readlink(f"/proc/{self.pid}/exe") and alive(self.pid)
        except FileNotFoundError:
            return False

    def wait_until_serving(self, timeout: float = 10) -> None:
        """Wait until the listener has exec'd the server, which it does at the first connection."""
        deadline = time.monotonic() + timeout
        while not self.serving():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the policy server did not start: " + self.stderr())
            time.sleep(0.01)

    def wait_until_waiting(self, timeout: float = 10) -> None:
        """Wait until the server sleeps in epoll_wait, having nothing left to do.

        By then it has accepted every connection made before and answered every
        request sent before: it sleeps only when nothing is ready. The kernel
        tells where a sleeping process waits (/proc/PID/wchan; "0" while it runs).
        """
        self.wait_until_serving(timeout)
        deadline = time.monotonic() + timeout
        wchan = Path(f"/proc/{self.pid}/wchan")
        while wchan.read_text() != "do_epoll_wait":
            if time.monotonic() > deadline:
                raise RuntimeError("the policy server is busy: " + self.stderr())
            time.sleep(0.01)

    def children(self) -> list[int]:
        """PIDs of processes the server started (it should start none)."""
        return children(self.pid)

    def wait_for_exit(self, timeout: float) -> int | None:
        """Wait for the server (or the listener) to exit; its status, or None if it runs on."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def __enter__(self) -> ServerService:
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (and anything it started); nothing to do if it exited already."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        self.process.wait(timeout=10)


def wake_socket_path(directory: Path) -> Path:
    """Where a test's handlers send their wake-ups (wakeup.py), never the host's /run.

    Beside the test's other sockets when that path fits a unix socket's 107
    bytes, else in a short directory of its own.
    """
    path = directory / "wake.sock"
    if len(str(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix="pbs-wake-")) / "wake.sock"


def _environment_options(config: Path, audit_socket: Path | None, wake: Path) -> list[str]:
    """systemd-socket-activate's `-E` options: our config, the audit sink, the wake-up socket."""
    environment = [f"PBS_ACTIVATED_CONFIG={config}", f"PBS_ACTIVATED_WAKE_SOCKET={wake}"]
    if audit_socket is not None:
        environment.append(f"PBS_ACTIVATED_JOURNAL_SOCKET={audit_socket}")
    options = []
    for variable in environment:
        options += ["-E", variable]
    return options


def listening(path: Path) -> bool:
    """Whether a unix socket at `path` is listening, seen without connecting to it.

    Its path appears at bind(), before listen(): a connect in between is refused
    (seen in about one run in five). A probe connection would itself start a
    handler, or the Accept=no server, so /proc/net/unix is read instead: its
    Flags column has __SO_ACCEPTCON (0x10000) for a listening socket.
    """
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & 0x10000:
            return True
    return False
