"""Stands in for journald's native socket: receives audit datagrams and counts them.

Run in its own process so its work does not share the load client's interpreter.
Entries that are neither an OK nor a DUNNO decision (errors, warnings, answers
of an unavailable lookup) are kept, their MESSAGE lines appended to the file
given as the second argument, so a bench can say what went wrong.
On SIGTERM it prints the count and exits.
"""

import signal
import socket
import sys

received = 0
ROUTINE = (b"\nPBS_ACTION=OK\n", b"\nPBS_ACTION=DUNNO\n")


def finish(signum: int, frame: object) -> None:
    print(received, flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, finish)
sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sink.bind(sys.argv[1])
unusual = open(sys.argv[2], "ab", buffering=0) if len(sys.argv) > 2 else None  # noqa: SIM115
buffer = bytearray(1 << 18)  # recv_into: no new bytes object per entry
while True:
    size = sink.recv_into(buffer)
    received += 1
    if unusual is not None:
        entry = bytes(buffer[:size])
        if not any(routine in entry for routine in ROUTINE):
            unusual.write(entry.split(b"\n", 1)[0] + b"\n")
