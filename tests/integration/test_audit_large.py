"""Audit entries too big for one datagram arrive whole, as journald's own clients send them:
the send buffer raised to fit, else the entry in a sealed memfd passed with SCM_RIGHTS."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AuditSink

from pbs_activated import audit

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
"""What journald counts as sealed (systemd 252 wants exactly these)."""


class Received:
    """One datagram: its entry, and the seals of the memfd it carried (None: no descriptor)."""

    def __init__(self, entry: dict[str, str], seals: int | None) -> None:
        self.entry = entry
        self.seals = seals


class FileDescriptorSink(AuditSink):
    """journald's native socket as far as big entries go: a datagram, or one memfd and no data.

    Its receive buffer is as small as the kernel allows: on a unix datagram socket
    the sender's buffer bounds a datagram, never the receiver's. Beyond AuditSink,
    it keeps each entry's seals and signals every arrival.
    """

    def __init__(self, path: Path) -> None:
        self.received: list[Received] = []  # before AuditSink starts the thread filling it
        self._arrived = threading.Event()
        super().__init__(path, receive_buffer=1)

    def _record(self, entry: dict[str, str], seals: int | None) -> None:
        super()._record(entry, seals)
        self.received.append(Received(entry, seals))
        self._arrived.set()

    def wait(self, timeout: float = 10) -> Received:
        assert self._arrived.wait(timeout), "no entry arrived"
        return self.received[-1]


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileDescriptorSink]:
    receiver = FileDescriptorSink(tmp_path / "journal.sock")
    monkeypatch.setenv("PBS_ACTIVATED_JOURNAL_SOCKET", str(receiver.path))
    monkeypatch.setattr(audit, "_sender", None)  # a fresh socket, with the default buffer
    yield receiver
    receiver.close()


def largest_datagram() -> int:
    """Beyond this no unprivileged sender's datagram goes: twice net.core.wmem_max."""
    return 2 * int(Path("/proc/sys/net/core/wmem_max").read_text())


def test_a_300_kib_entry_arrives_whole(sink: FileDescriptorSink) -> None:
    value = "a" * (300 << 10)
    audit.send(audit.INFO, "big", PBS_BIG=value, PBS_AFTER="last field")
    received = sink.wait()
    assert received.entry["PBS_BIG"] == value
    assert received.entry["PBS_AFTER"] == "last field"


def test_an_entry_larger_than_any_datagram_arrives_whole_in_a_sealed_memfd(
    sink: FileDescriptorSink,
) -> None:
    value = "line\n" * ((largest_datagram() + (1 << 20)) // 5)
    assert audit.deliver(audit.entry(audit.INFO, "huge", PBS_HUGE=value), "huge")
    received = sink.wait()
    assert received.seals == SEALS
    assert received.entry["PBS_HUGE"] == value  # the binary form, newlines and all


def test_a_small_entry_is_still_one_plain_datagram(sink: FileDescriptorSink) -> None:
    audit.send(audit.INFO, "small", PBS_ACTION="OK")
    received = sink.wait()
    assert received.seals is None
    assert received.entry["PBS_ACTION"] == "OK"


def test_after_a_big_entry_small_ones_still_go_as_datagrams(sink: FileDescriptorSink) -> None:
    audit.send(audit.INFO, "big", PBS_BIG="b" * (1 << 20))
    sink.wait()
    sink._arrived.clear()
    audit.send(audit.INFO, "small", PBS_ACTION="DUNNO")
    received = sink.wait()
    assert received.seals is None
    assert received.entry["PBS_ACTION"] == "DUNNO"
