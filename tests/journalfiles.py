"""Real journal files for the reader's tests and benchmark, and the reader as a process.

`systemd-journal-remote --output=DIR/NAME.journal -` turns journal export format
on stdin into a real journal file and keeps every field it is given, trusted
`_`-fields and `__REALTIME_TIMESTAMP` included (tests/integration/reader/test_journal_files.py
checks that). So a test can write exactly the entry a forger could not: one from
`_SYSTEMD_UNIT=dovecot.service`, next to the forger's `logger -t dovecot` line from
a session scope, and read both through `pbs-activated journal --directory DIR`.

Entries stream: a `JournalWriter` keeps one journal-remote process per file and
feeds it, so a reader following the directory sees each entry as it is written,
as it would see journald's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from support import REPO, component_python

JOURNAL_REMOTE = "/usr/lib/systemd/systemd-journal-remote"
BOOT_ID = "5b0e1c2d3a4f45e6a7b8c9d0e1f2a3b4"
"""One boot for every entry: entries of one boot are ordered by monotonic time."""

_MONOTONIC_ORIGIN_US = 1_000_000_000_000_000
"""Monotonic = realtime - this, so files written at different times interleave correctly."""


def now_us() -> int:
    return time.time_ns() // 1000


def entry(
    message: str,
    unit: str | None = "dovecot.service",
    at: float | None = None,
    transport: str = "syslog",
    identifier: str = "dovecot",
    **fields: str,
) -> dict[str, str]:
    """One journal entry as journald would store it for a process in `unit`.

    `at` is the wall-clock time in seconds (default: now). `unit=None` leaves
    `_SYSTEMD_UNIT` out, as for a process journald could not place in a unit.
    """
    realtime = now_us() if at is None else int(at * 1_000_000)
    record = {
        "__REALTIME_TIMESTAMP": str(realtime),
        "__MONOTONIC_TIMESTAMP": str(realtime - _MONOTONIC_ORIGIN_US),
        "_BOOT_ID": BOOT_ID,
        "_TRANSPORT": transport,
        "_HOSTNAME": "mail",
        "PRIORITY": "6",
        "SYSLOG_FACILITY": "2",
        "SYSLOG_IDENTIFIER": identifier,
        "_UID": "0",
        "_GID": "0",
        "_COMM": "dovecot",
        "_EXE": "/usr/sbin/dovecot",
        "MESSAGE": message,
    }
    if unit is not None:
        record["_SYSTEMD_UNIT"] = unit
    record.update(fields)
    return record


def forged(message: str, at: float | None = None, uid: int = 1000) -> dict[str, str]:
    """What `logger -t dovecot MESSAGE` run by a local user leaves in the journal."""
    return entry(
        message,
        unit=f"session-{uid}.scope",
        at=at,
        identifier="dovecot",
        _UID=str(uid),
        _GID=str(uid),
        _COMM="logger",
        _EXE="/usr/bin/logger",
        _SYSTEMD_SLICE=f"user-{uid}.slice",
    )


def dovecot_login(
    address: str,
    user: str = "alice",
    protocol: str = "pop3",
    at: float | None = None,
    unit: str | None = "dovecot.service",
) -> dict[str, str]:
    """A successful Dovecot 2.3 login line from the mail server's unit."""
    return entry(
        f"{protocol}-login: Login: user=<{user}>, method=PLAIN, rip={address}, "
        f"lip=192.0.2.1, mpid=4242, TLS, session=<gB9Fq5OZaM/AAAAAAAAAAAAAB>",
        unit=unit,
        at=at,
    )


def encode_export(record: Mapping[str, str]) -> bytes:
    """Encode one entry in journal export format (binary form for values with newlines)."""
    parts = []
    for name, value in record.items():
        data = value.encode()
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts) + b"\n"


def write_journal(path: Path, records: Iterable[Mapping[str, str]]) -> None:
    """Write (or append) entries to the journal file `path` in one journal-remote run."""
    data = b"".join(encode_export(record) for record in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [JOURNAL_REMOTE, f"--output={path}", "-"], input=data, capture_output=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"systemd-journal-remote failed: {result.stderr.decode()}")


class JournalWriter:
    """A journal file being written as the reader follows it: one live journal-remote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [JOURNAL_REMOTE, f"--output={path}", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def append(self, *records: Mapping[str, str]) -> None:
        """Send entries; journal-remote writes each one as soon as it has read it."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"".join(encode_export(record) for record in records))
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def read_export(path: Path) -> list[dict[str, str]]:
    """Read back every entry of a directory or file with journalctl, as export dicts."""
    option = f"--directory={path}" if path.is_dir() else f"--file={path}"
    output = subprocess.run(
        ["journalctl", option, "-o", "export", "--no-pager"], capture_output=True, check=True
    ).stdout
    records = []
    for block in output.decode().split("\n\n"):
        if block.strip():
            records.append(dict(line.split("=", 1) for line in block.splitlines() if "=" in line))
    return records


class NotifySink:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: collects sd_notify messages.

    A thread drains it as systemd does: the kernel queues only a few datagrams
    (net.unix.max_dgram_qlen, 10 by default) before sd_notify() blocks the sender.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.messages: list[dict[str, str]] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                payload = self.socket.recv(65536)
            except OSError:
                return
            if not payload:
                return
            message = dict(
                line.split("=", 1) for line in payload.decode().splitlines() if "=" in line
            )
            with self._arrived:
                self.messages.append(message)
                self._arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> dict[str, str]:  # type: ignore[no-untyped-def]
        """Return the first message (old or new) satisfying `predicate`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        raise AssertionError(f"no matching sd_notify message within {timeout} s: {self.messages}")

    def forget(self) -> None:
        """Drop the messages seen so far, to wait for new ones."""
        with self._arrived:
            self.messages.clear()

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        self._thread.join(timeout=2)


class ReaderProcess:
    """`pbs-activated journal --directory DIR` as systemd would run it, with its own state."""

    def __init__(
        self,
        tmp_path: Path,
        config: Path,
        directory: Path,
        audit_socket: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        # A short directory: unix socket paths are limited to 107 bytes, pytest's are long.
        self.notify_path = Path(tempfile.mkdtemp(prefix="pbs-notify-")) / "notify.sock"
        self.wake_path = Path(tempfile.mkdtemp(prefix="pbs-wake-")) / "wake.sock"
        """The reader's wake-up socket (wakeup.py): the test's, never the host's /run."""
        self.audit_socket = audit_socket
        self.extra_environment = dict(environment or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.notify: NotifySink | None = None
        self.log = tmp_path / "reader.log"

    def start(self, wait_ready: bool = True) -> ReaderProcess:
        """Start the reader; by default return once it said READY=1."""
        if self.notify is not None:
            self.notify.close()
            self.notify_path.unlink(missing_ok=True)
        self.notify_path.parent.mkdir(exist_ok=True)
        self.wake_path.parent.mkdir(exist_ok=True)
        self.notify = NotifySink(self.notify_path)
        environment = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            STATE_DIRECTORY=str(self.state),
            NOTIFY_SOCKET=str(self.notify_path),
            PBS_ACTIVATED_WAKE_SOCKET=str(self.wake_path),
        )
        environment.update(self.extra_environment)
        if self.audit_socket is not None:
            environment["PBS_ACTIVATED_JOURNAL_SOCKET"] = str(self.audit_socket)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    component_python(),
                    "-m",
                    "pbs_activated",
                    "--config",
                    str(self.config),
                    "journal",
                    "--directory",
                    str(self.directory),
                ],
                env=environment,
                stdout=log,
                stderr=log,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        assert self.notify is not None
        return self.notify.wait_for(lambda message: message.get("READY") == "1", timeout)

    def wait_status(self, text: str, timeout: float = 15.0) -> dict[str, str]:
        """Wait for a STATUS containing `text` (e.g. "Following", "Waiting for Redis")."""
        assert self.notify is not None
        return self.notify.wait_for(lambda message: text in message.get("STATUS", ""), timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        self.notify_path.unlink(missing_ok=True)
        if self.notify_path.parent.exists():
            self.notify_path.parent.rmdir()
        shutil.rmtree(self.wake_path.parent, ignore_errors=True)

    @property
    def cursor(self) -> str:
        path = self.state / "cursor"
        return path.read_text().strip() if path.exists() else ""

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
