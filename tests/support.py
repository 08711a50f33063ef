"""Support shared by every test and by the bench (bench/ puts tests/ on sys.path):
a real redis-server, the audit sink, Postfix's requests, the units' commands, the CLI.

No mocks: Redis is Debian's redis-server on a unix socket in a temp dir, the handler
runs under systemd-socket-activate as its unit's ExecStart= runs it, and audit
entries arrive on a real datagram socket in journald's native format.
"""

from __future__ import annotations

import atexit
import functools
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PYTHON = "/usr/bin/python3"
"""Debian's interpreter, with Debian's python3-redis and python3-systemd, as in the .deb."""

REDIS_PY_ENVIRONMENT = "PBS_TEST_REDIS_PY"
"""Run the CLI and the reader with this python3-redis instead of Debian's here: a
version, or `other` for the other Debian release's (tests/redispy.py)."""


INSTALLED_PACKAGES = "/usr/lib/python3/dist-packages"
"""Where Debian's python3 packages, ours included, are installed."""

LAUNCHER = "/usr/libexec/pbs-activated/policy"
"""The policy units' launcher as installed (pbs-activated.install)..."""
LAUNCHER_SOURCE = REPO / "packaging/policy/policy"
"""... and in this checkout."""

POSTFIX_RCPT_REQUEST = (
    ("request", "smtpd_access_policy"),
    ("protocol_state", "RCPT"),
    ("protocol_name", "ESMTP"),
    ("client_address", "192.0.2.10"),
    ("client_name", "client.example.test"),
    ("reverse_client_name", "client.example.test"),
    ("helo_name", "client.example.test"),
    ("sender", "alice@example.test"),
    ("recipient", "someone@remote.test"),
    ("recipient_count", "0"),
    ("queue_id", ""),
    ("instance", "1a2b.5f3c4d5e.1"),
    ("size", "0"),
    ("etrn_domain", ""),
    ("stress", ""),
    ("sasl_method", ""),
    ("sasl_username", ""),
    ("sasl_sender", ""),
    ("ccert_subject", ""),
    ("ccert_issuer", ""),
    ("ccert_fingerprint", ""),
    ("encryption_protocol", "TLSv1.3"),
    ("encryption_cipher", "TLS_AES_256_GCM_SHA384"),
    ("encryption_keysize", "256"),
    ("policy_context", ""),
    ("server_address", "192.0.2.1"),
    ("server_port", "25"),
)
"""What Postfix 3.7 sends at RCPT (SMTPD_POLICY_README), in its order, from 192.0.2.10."""


def encode_request(**attributes: str) -> bytes:
    """Encode a request as Postfix does: POSTFIX_RCPT_REQUEST, values replaced by `attributes`
    (in place; a name it lacks is added at the end)."""
    merged = dict(POSTFIX_RCPT_REQUEST, **attributes)
    return "".join(f"{name}={value}\n" for name, value in merged.items()).encode() + b"\n"


def unit_command(unit: str, directory: Path, tree: Path = REPO) -> list[str]:
    """A policy unit's ExecStart=, run from a source tree as systemd runs the installed one.

    The unit starts LAUNCHER, which adds INSTALLED_PACKAGES to sys.path under
    `python3 -IS` (-I ignores PYTHONPATH): its copy in `directory` adds `tree`
    (this checkout, or another revision's: bench/startup_ab.py) instead and runs
    through its own #! line, with the unit's arguments. If the unit's command
    changes, so does every run of it here; one that cannot be pointed at the tree
    is an error, never a silent run of something else.
    """
    for line in (tree / "units" / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            arguments = shlex.split(line.removeprefix("ExecStart="))
            break
    else:
        raise RuntimeError(f"{tree}: {unit}: no ExecStart=")
    source = (tree / LAUNCHER_SOURCE.relative_to(REPO)).read_text()
    if arguments[0] != LAUNCHER or source.count(INSTALLED_PACKAGES) != 1:
        raise RuntimeError(
            f"{tree}: {unit}: ExecStart= is not {LAUNCHER} adding {INSTALLED_PACKAGES}"
        )
    launcher = directory / Path(LAUNCHER).name
    text = source.replace(INSTALLED_PACKAGES, str(tree))
    if not launcher.exists() or launcher.read_text() != text:
        # Renamed into place: a handler starting from an earlier copy reads it whole.
        written = launcher.with_name(launcher.name + ".new")
        written.write_text(text)
        written.chmod(0o755)
        written.replace(launcher)
    return [str(launcher), *arguments[1:]]


_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Drawn below the kernel's ephemeral range, which outgoing connections take
    their ports from, so that no connection made between this probe and the
    server's start can occupy it; and never the same port twice in one run, so
    that two servers are never told the same one.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        ephemeral_low = int(ports.read().split()[0])
    while True:
        port = random.randrange(10000, ephemeral_low)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (zombies included); none once it is gone."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, before or while it was read
        return False
    return state != "Z"


def component_python() -> str:
    """The interpreter the CLI and the reader run under in these tests."""
    version = os.environ.get(REDIS_PY_ENVIRONMENT, "")
    if not version:
        return PYTHON
    from redispy import interpreter_with_redis_py, other_release_version

    return interpreter_with_redis_py(other_release_version() if version == "other" else version)


def deb_of_commit(commit: str, version: str) -> Path:
    """The .deb of `version` as `make deb` built it at `commit` of this repository's
    history (an earlier release, to upgrade from), cached under build/ by commit.

    Built from `git archive` outside the checkout: inside it, that commit's Makefile
    would ask this repository's git which files to package.
    """
    deb = REPO / "build" / f"pbs-activated_{version}_all-{commit[:12]}.deb"
    if deb.is_file():
        return deb
    with tempfile.TemporaryDirectory(prefix=f"pbs-{version}-") as temporary:
        tree = Path(temporary)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
        subprocess.run(
            ["make", "-C", str(tree), "deb"], capture_output=True, check=True, env=environment
        )
        deb.parent.mkdir(parents=True, exist_ok=True)
        partial = deb.with_name(f"{deb.name}.{os.getpid()}")
        shutil.copyfile(tree / "dist" / f"pbs-activated_{version}_all.deb", partial)
        partial.rename(deb)
    return deb


@functools.cache
def package_for_other_users() -> Path:
    """A directory every user can import pbs_activated from: for PYTHONPATH of code run as
    another user (`nobody`, a group member) than the one who owns the checkout.

    Why a copy: a checkout under /root, or in any directory another user cannot
    traverse (`mktemp -d` is 0700), cannot be imported from by `nobody`, and the
    test would fail on the import instead of reaching what it checks. The copy is
    made once per test process, world-readable whatever the umask of the clone, in
    the system's temporary directory, and removed when the process ends.
    """
    directory = Path(tempfile.mkdtemp(prefix="pbs-activated-package-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    shutil.copytree(
        REPO / "pbs_activated",
        directory / "pbs_activated",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in (directory, *directory.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


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

    @property
    def tcp_url(self) -> str:
        """The loopback port's URL (a server started with `port`)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *arguments: str) -> str:
        """Run one command through redis-cli on the unix socket; return its output."""
        result = subprocess.run(
            ["redis-cli", "-s", str(self.socket_path), *arguments],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip()

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
            if self._answers_ping():
                return
            time.sleep(0.02)
        raise RuntimeError(
            "redis-server did not start: " + (self.directory / "redis.log").read_text()
        )

    def _answers_ping(self) -> bool:
        """PONG, or NOAUTH from a server closed by ACL users: up either way.

        In RESP over the socket, not redis-py, which the bench does not install.
        """
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1)
                probe.connect(str(self.socket_path))
                probe.sendall(b"PING\r\n")
                reply = probe.recv(256)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

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

    def __init__(self, path: Path, receive_buffer: int | None = None) -> None:
        """Bind `path` and start draining it; `receive_buffer`: SO_RCVBUF, if not the default."""
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if receive_buffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.socket.bind(str(path))
        self.entries: list[dict[str, str]] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        buffer = bytearray(64 << 20)
        while True:
            try:
                payload, seals = receive_datagram(self.socket, buffer)
            except OSError:
                return
            self._record(decode_entry(payload), seals)

    def _record(self, entry: dict[str, str], seals: int | None) -> None:
        """Keep one entry that arrived (`seals`: its memfd's, None for a plain datagram).

        Runs in the draining thread; a subclass that keeps more extends it.
        """
        self.entries.append(entry)

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


def receive_datagram(sock: socket.socket, buffer: bytearray) -> tuple[bytes, int | None]:
    """One datagram as journald takes it: its bytes, or those of the memfd it carries.

    Returns the payload and, for a memfd, its seals (None for a plain datagram).
    `buffer` is reused: big enough for any datagram (twice net.core.wmem_max).
    """
    import fcntl

    size, ancillary, _, _ = sock.recvmsg_into([buffer], socket.CMSG_SPACE(4))
    payload, seals = bytes(buffer[:size]), None
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            descriptor = int.from_bytes(data[:4], sys.byteorder)
            seals = fcntl.fcntl(descriptor, fcntl.F_GET_SEALS)
            with open(descriptor, "rb") as memfd:  # at its end: the sender wrote it
                payload = os.pread(memfd.fileno(), os.fstat(descriptor).st_size, 0)
    return payload, seals


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
