"""Test support shared by every test: a real redis-server, the audit sink, the CLI.

No mocks: Redis is Debian's redis-server on a unix socket in a temp dir, the handler
runs under systemd-socket-activate, and audit entries arrive on a real datagram
socket in journald's native format.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PYTHON = "/usr/bin/python3"
"""Debian's interpreter, with Debian's python3-redis and python3-systemd, as in the .deb."""

REDIS_PY_ENVIRONMENT = "PBS_TEST_REDIS_PY"
"""Run the CLI and the reader with this python3-redis instead of Debian's here: a
version, or `other` for the other Debian release's (tests/redispy.py)."""


def component_python() -> str:
    """The interpreter the CLI and the reader run under in these tests."""
    version = os.environ.get(REDIS_PY_ENVIRONMENT, "")
    if not version:
        return PYTHON
    from redispy import interpreter_with_redis_py, other_release_version

    return interpreter_with_redis_py(other_release_version() if version == "other" else version)


class RedisServer:
    """A private redis-server listening on a unix socket (and optionally a loopback port)."""

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        durable: bool = False,
        arguments: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.port = port
        self.durable = durable
        """Keep an fsync'ed append-only file, so that a kill loses nothing on Redis's side."""
        self.arguments = arguments
        """More server options, e.g. `--aclfile` for a store closed by ACL users."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        """Start (or restart) the server on the same socket; wait until it answers."""
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []),
                *self.arguments,
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception as error:
                if "Authentication required" in str(error):  # up, and closed by ACL
                    return
                time.sleep(0.02)
        raise RuntimeError(
            "redis-server did not start: " + (self.directory / "redis.log").read_text()
        )

    def stop(self) -> None:
        """Stop the server abruptly, as a crash would (the socket file is removed)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.socket_path.unlink(missing_ok=True)

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(
            unix_socket_path=str(self.socket_path), decode_responses=True, socket_timeout=2
        )


def write_config(path: Path, text: str) -> Path:
    """Write a TOML config file and return its path."""
    path.write_text(text)
    return path


class AuditSink:
    """A datagram socket standing in for journald's: collects native-protocol entries.

    A thread drains it as journald would: an unread datagram socket fills after a
    few entries and then blocks the sender.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.entries: list[dict[str, str]] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                payload = self.socket.recv(1 << 20)
            except OSError:
                return
            self.entries.append(decode_entry(payload))

    def collect(self, timeout: float = 0.5, until: int = 0) -> list[dict[str, str]]:
        """Wait up to `timeout` seconds, or until `until` entries have arrived; return them all."""
        deadline = time.monotonic() + (timeout if until == 0 else max(timeout, 5))
        while time.monotonic() < deadline and (not until or len(self.entries) < until):
            time.sleep(0.01)
        return list(self.entries)

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        self._thread.join(timeout=2)


def decode_entry(payload: bytes) -> dict[str, str]:
    """Decode one native-protocol datagram (both the plain and the binary field forms)."""
    entry: dict[str, str] = {}
    position = 0
    while position < len(payload):
        newline = payload.index(b"\n", position)
        line = payload[position:newline]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            position = newline + 1
        else:
            name = line
            size = int.from_bytes(payload[newline + 1 : newline + 9], "little")
            value = payload[newline + 9 : newline + 9 + size]
            position = newline + 9 + size + 1
        entry[name.decode()] = value.decode()
    return entry


def run_cli(
    *arguments: str, config: Path | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python3 -m pbs_activated` from this checkout, as the installed command would run."""
    command = [component_python(), "-m", "pbs_activated"]
    if config is not None:
        command += ["--config", str(config)]
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        command + list(arguments),
        env=environment,
        capture_output=True,
        text=input is None,
        input=input,
        timeout=30,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command + list(arguments)} failed: {result.stderr}")
    return result
