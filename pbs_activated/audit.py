"""Structured journal entries: the audit trail `journalctl` reads.

Every decision and every login taken is one entry with `PBS_*` fields, so
`journalctl PBS_ACTION=OK` or `journalctl PBS_USER=alice` answer an auditor.

Entries go to journald's native socket in its documented datagram format
(systemd's "Native Journal Protocol") rather than through `systemd.journal.send`,
because the policy handler writes one per request and importing systemd-python
costs it ~20 ms per connection. Where no journald listens (a developer's shell,
a container without it) the entry becomes one line on stderr instead.
"""

from __future__ import annotations

import _socket
import os
import sys

from pbs_activated import defaults

ERROR = 3
WARNING = 4
NOTICE = 5
INFO = 6
DEBUG = 7

_sender: _socket.socket | None = None


def send(priority: int, message: str, **fields: object) -> None:
    """Write one journal entry: a human MESSAGE plus upper-case PBS_* style fields.

    Fields whose value is None or empty are left out, so a query for a field
    finds only entries where it means something.
    """
    deliver(entry(priority, message, **fields), message)


def entry(priority: int, message: str, **fields: object) -> bytes:
    """Encode the entry `send` writes, for a caller that delivers it later (the server)."""
    values = {
        "MESSAGE": message,
        "PRIORITY": str(priority),
        "SYSLOG_IDENTIFIER": defaults.SYSLOG_IDENTIFIER,
    }
    for name, value in fields.items():
        if value is not None and value != "":
            values[name] = str(value)
    return encode_entry(values)


def deliver(payload: bytes, message: str, wait: bool = True) -> bool:
    """Send an encoded entry to journald; where that fails, its message goes to stderr.

    While journald's queue is full the send waits up to JOURNAL_SEND_TIMEOUT, or
    not at all without `wait`. Return whether journald took the entry.
    """
    try:
        _send_datagram(payload, wait)
    except OSError:
        print(f"{defaults.SYSLOG_IDENTIFIER}: {message}", file=sys.stderr, flush=True)
        return False
    return True


def encode_entry(entry: dict[str, str]) -> bytes:
    """Encode fields in the native protocol; values with newlines get the binary form."""
    # The handler encodes one entry per request: one join and one encode when no
    # value holds a newline (names never do), field by field otherwise.
    text = "".join([f"{name}={value}\n" for name, value in entry.items()])
    if text.count("\n") == len(entry):
        return text.encode("utf-8", "replace")
    parts = []
    for name, value in entry.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def _send_datagram(payload: bytes, wait: bool = True) -> None:
    global _sender
    path = os.environ.get(defaults.JOURNAL_SOCKET_ENVIRONMENT) or defaults.JOURNAL_SOCKET
    if _sender is None:
        _sender = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        _sender.setblocking(False)
    try:
        # Non-blocking first: a socket with a timeout polls before every send,
        # one system call per entry spent for the rare full queue.
        _sender.sendto(payload, path)
    except BlockingIOError:
        if not wait:
            raise
        # A datagram send blocks while journald's queue is full; past this the
        # entry goes to stderr instead, so a stalled journald never stalls Postfix.
        _sender.settimeout(defaults.JOURNAL_SEND_TIMEOUT)
        try:
            _sender.sendto(payload, path)
        finally:
            _sender.setblocking(False)
