"""`make bench`: what following the config file costs each request (service.Configured).

The handler and the Accept=no server compare the config file's stat with the one
it was last read at, before every chunk Postfix sends (issue #13: a mended file
must reach an open connection before its next answer). This measures that
check, `Configured.refresh()` on an unchanged file, against the time a request
takes the handler end to end in this run (one request on a kept connection,
from bench/run.py's 1 x 3000 figure, given as an argument or measured roughly
here), as a ratio.

    /usr/bin/python3 bench/config_refresh.py [--loops N] [--request-us US]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def refresh_cost_us(loops: int) -> float:
    """Median µs of one refresh() of an unchanged file, over 7 rounds of `loops`."""
    sys.path.insert(0, str(REPO))
    from pbs_activated.answer.service import Configured

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "pbs-activated.toml")
        Path(path).write_text('[redis]\nurl = "unix:///nonexistent/store.sock"\n')
        configured = Configured(path)
        rounds = []
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(loops):
                configured.refresh()
            rounds.append((time.perf_counter() - started) / loops * 1e6)
        configured.close()
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=100_000)
    parser.add_argument(
        "--request-us",
        type=float,
        default=1e6 / 10_000,
        help="a request's time in the handler, µs (default: 10000 requests/s, 1 x 3000's order)",
    )
    options = parser.parse_args()
    cost = refresh_cost_us(options.loops)
    print("following the config file: one stat per chunk (service.Configured.refresh)")
    print(f"  unchanged file, median of 7 x {options.loops}: {cost:.2f} us per request")
    print(
        f"  against a request at {options.request_us:.0f} us: "
        f"{cost / options.request_us:.1%} of it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
