"""Stands in for journald's native socket: receives audit datagrams and counts them.

Run in its own process so its work does not share the load client's interpreter.
On SIGTERM it prints the count and exits.
"""

import signal
import socket
import sys

received = 0


def finish(signum: int, frame: object) -> None:
    print(received, flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, finish)
sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sink.bind(sys.argv[1])
buffer = bytearray(1 << 18)  # recv_into: no new bytes object per entry
while True:
    sink.recv_into(buffer)
    received += 1
