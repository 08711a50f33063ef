"""The latency floor for the journal reader: the least a Python journal follower can do.

It follows the same journal directory with the same python-systemd calls the
reader uses (`_Reader`, a `_SYSTEMD_UNIT` match, `wait()` on the journal's inotify
descriptor) and, for every new entry, takes the text after `rip=` and SETs one
key over redis-py: one wake-up, one read, one Redis round trip. No trust check,
no parser, no Lua, no audit entry, no cursor. The reader's figures are given as
multiples of this one's, measured in the same run on the same journal writes.

    journal_floor.py DIRECTORY REDIS_URL
"""

import sys

import redis
from systemd import daemon, journal

directory, url = sys.argv[1], sys.argv[2]
client = redis.Redis.from_url(url)
reader = journal._Reader(0, directory)
reader.add_match("_SYSTEMD_UNIT=dovecot.service")
reader.seek_tail()
reader._previous()  # seek_tail() then next() would return the last entry again
daemon.notify("READY=1")
while True:
    reader.wait(-1)
    while reader._next():
        message = reader._get("MESSAGE").decode()
        address = message.rpartition("rip=")[2].partition(",")[0]
        client.set("pbs:floor:" + address, "1")
