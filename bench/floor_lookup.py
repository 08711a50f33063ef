"""The floor plus the I/O every answer needs: one Redis GET and one audit datagram.

Run as `/usr/bin/python3 -I -S bench/floor_lookup.py REDIS_PORT` under
systemd-socket-activate, one process per connection. It parses nothing,
decides nothing and sends a fixed audit entry, so its throughput is the
ceiling of any one-process-per-connection Python handler on this machine:
the bench prints it next to ours to show how much of the gap to the goals is
the design's and how much the handler's.

Only built-in modules, already loaded or C-only: nothing to import from disk.
"""

import _socket
import posix
import sys

GET = b"*2\r\n$3\r\nGET\r\n$21\r\npbs:client:192.0.2.10\r\n"
REPLY = b"action=OK\n\n"
ENTRY = (
    b"MESSAGE=OK for 192.0.2.10 (alice) at RCPT: recent login\nPRIORITY=6\n"
    b"SYSLOG_IDENTIFIER=pbs-activated\nPBS_ACTION=OK\nPBS_REASON=recent login\n"
    b"PBS_CLIENT_ADDRESS=192.0.2.10\nPBS_USER=alice\nPBS_PROTOCOL_STATE=RCPT\n"
)

redis = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
redis.connect((b"127.0.0.1", int(sys.argv[1])))
redis.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
journal = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
journal_path = posix.environ[b"PBS_ACTIVATED_JOURNAL_SOCKET"]

pending = b""
while True:
    chunk = posix.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    requests = pending.count(b"\n\n")
    if requests:
        pending = pending[pending.rindex(b"\n\n") + 2 :]
        for _ in range(requests):
            redis.sendall(GET)
            redis.recv(65536)
        posix.write(1, REPLY * requests)
        for _ in range(requests):
            journal.sendto(ENTRY, journal_path)
