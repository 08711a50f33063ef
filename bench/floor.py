"""The floor: an interpreter that answers every policy request without importing anything.

Run as `/usr/bin/python3 -I -S bench/floor.py` under systemd-socket-activate,
one process per connection like our handler. It reads the socket on fd 0,
counts the empty lines that end requests and writes `action=DUNNO` for each.
No real handler can start faster or stay smaller: it is what the interpreter
itself costs, so our handler's figures are given as multiples of it.

`posix` is the C module under `os`, built in and already loaded before the
first line runs, so naming it imports nothing.
"""

import posix

REPLY = b"action=DUNNO\n\n"

pending = b""
while True:
    chunk = posix.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    requests = pending.count(b"\n\n")
    if requests:
        pending = pending[pending.rindex(b"\n\n") + 2 :]
        posix.write(1, REPLY * requests)
