"""Structured journal entries: the audit trail `journalctl` reads.

Every decision and every login taken is one entry with `PBS_*` fields, so
`journalctl PBS_ACTION=OK` or `journalctl PBS_USER=alice` answer an auditor.

Entries go to journald's native socket in its documented datagram format
(systemd's "Native Journal Protocol") rather than through `systemd.journal.send`,
because the policy handler writes one per request and importing systemd-python
costs it ~20 ms per connection. Where no journald listens (a developer's shell,
a container without it) the entry becomes one line on stderr instead.

An entry too big for one datagram (EMSGSIZE: past the socket's send buffer,
208 KiB by default) is sent as journald's own clients send it (systemd's
sd_journal_sendv): first with the send buffer raised to fit, as far as
net.core.wmem_max allows, else written into a sealed memfd whose descriptor goes
to journald in an empty datagram. So a decision with a long attribute, or any
entry up to journald's own limit, is never lost to its size.
"""

from __future__ import annotations

import _socket
import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)
import sys

from pbs_activated.config import defaults

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
    path = defaults.environment(defaults.JOURNAL_SOCKET_ENVIRONMENT) or defaults.JOURNAL_SOCKET
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
    except OSError as error:
        import errno  # only here: the common path imports nothing

        # ENOBUFS as EMSGSIZE: what sd_journal_sendv takes for "does not fit".
        if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
            raise
        _send_large(_sender, payload, path, wait)


def _send_large(sender: _socket.socket, payload: bytes, path: str, wait: bool) -> None:
    """Send an entry too big for the socket's buffer: a bigger buffer, else a sealed memfd.

    As sd_journal_sendv does (systemd's journal-send.c). The kernel refuses a
    datagram longer than the send buffer (less 32 bytes); SO_SNDBUF doubles what
    it is given, up to net.core.wmem_max (SO_SNDBUFFORCE, past it, needs
    CAP_NET_ADMIN, which no unit of ours has). Beyond that, the entry goes into a
    memfd (_send_memfd). A full queue is waited for as in _send_datagram.
    """
    import errno

    sender.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, len(payload))
    if wait:
        sender.settimeout(defaults.JOURNAL_SEND_TIMEOUT)
    try:
        try:
            sender.sendto(payload, path)
            return
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        _send_memfd(sender, payload, path)
    finally:
        sender.setblocking(False)


def _send_memfd(sender: _socket.socket, payload: bytes, path: str) -> None:
    """Write the entry into a sealed memfd and send journald its descriptor alone.

    Sealed against any change, so journald maps it instead of copying it, and
    takes it from an unprivileged sender (an unsealed file it accepts only from
    /dev/shm, /tmp or /var/tmp). journald reads an entry from a datagram that
    carries one descriptor (SCM_RIGHTS) and no data.
    """
    import fcntl

    # No MFD_NOEXEC_SEAL: it adds F_SEAL_EXEC, and systemd 252's journald (Debian 12)
    # counts a memfd as sealed only with exactly these four seals.
    memfd = posix.memfd_create("pbs-activated-audit", posix.MFD_CLOEXEC | posix.MFD_ALLOW_SEALING)
    try:
        written = 0
        while written < len(payload):
            written += posix.write(memfd, memoryview(payload)[written:])
        fcntl.fcntl(
            memfd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
        )
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, memfd.to_bytes(4, sys.byteorder))]
        sender.sendmsg([], rights, 0, path)
    finally:
        posix.close(memfd)
