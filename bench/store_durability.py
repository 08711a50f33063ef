"""What `appendfsync always` (the package's store, store.conf) costs a login's write.

The reader moves its journal cursor only once the store acknowledged a login,
and with `appendfsync always` an acknowledged login is on disk: a power cut
loses none. This measures the price: logins written one after another, each
with `Writer.authorize` (the authorize script, ROLE and WAIT in one round trip,
as the reader sends them), against three redis-servers on unix sockets in one
run, taking turns: no persistence, `appendfsync everysec`, `appendfsync always`.

    /usr/bin/python3 bench/store_durability.py [--logins N] [--rounds N]

Writes go to this machine's disk (a temporary directory under /var/tmp).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODES = {
    "no persistence": ["--appendonly", "no", "--save", ""],
    "appendfsync everysec": ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
    "appendfsync always": ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
}


def start(directory: Path, options: list[str]) -> subprocess.Popen[bytes]:
    directory.mkdir()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(directory / "s.sock"),
            "--dir",
            str(directory),
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (directory / "s.sock").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.01)
    return process


def logins_per_second(socket_path: Path, count: int, first: int) -> float:
    """Write `count` logins (distinct addresses) one by one; return the rate."""
    from pbs_activated.config import RedisSettings
    from pbs_activated.config.storeurl import parse_redis_url
    from pbs_activated.store import keys
    from pbs_activated.store.writer import Writer

    settings = RedisSettings()
    parse_redis_url(f"unix://{socket_path}", settings)
    client = Writer(settings)
    expires = keys.now_ms() + 600_000
    started = time.perf_counter()
    for number in range(first, first + count):
        client.authorize(f"2001:db8::{number:x}", "alice", expires)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=2000, help="logins per round")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="pbs-durability-", dir="/var/tmp") as temporary:
        servers = {
            name: start(Path(temporary) / str(index), arguments)
            for index, (name, arguments) in enumerate(MODES.items())
        }
        try:
            rates: dict[str, list[float]] = {name: [] for name in MODES}
            for round_number in range(options.rounds):
                for index, name in enumerate(MODES):
                    socket_path = Path(temporary) / str(index) / "s.sock"
                    first = round_number * options.logins
                    rates[name].append(logins_per_second(socket_path, options.logins, first))
        finally:
            for process in servers.values():
                process.terminate()
                process.wait()
    base = statistics.median(rates["no persistence"])
    print(f"logins written one by one (Writer.authorize), median of {options.rounds} rounds:")
    for name, series in rates.items():
        rate = statistics.median(series)
        print(f"  {name:<22} {rate:8.0f}/s  {1e6 / rate:7.0f} us each  {rate / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
