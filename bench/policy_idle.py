"""What `max_idle` of check_policy_service costs: handlers alive and their memory.

Each smtpd process holds one policy connection, and with pbs-policy.socket
(Accept=yes) one handler process, for as long as Postfix keeps it: until the
smtpd exits (master.cf's `max_idle`, 100 s by default, or `max_use` sessions) or
the connection has been idle `max_idle` of check_policy_service (Postfix's
default 300 s; pbs_activated.admin.postfix's value). This boots the system tests' mail
host (tests/system), installs the built .deb, and plays a mix of SMTP sessions
as a small site sees them: CLIENTS clients, each sending a burst of one to five
sessions, then idle for seconds to minutes (log-normal, median 40 s, clipped to
5 s .. 10 min), while it samples once a second the handlers alive and their RSS.

Time is compressed by SCALE (10): every Postfix idle setting and every gap is
divided by it, so a run of 3 minutes plays 30 minutes of the site. Processes
and memory do not scale, and start-up is not what is measured here.

    /usr/bin/python3 bench/policy_idle.py [--minutes 3] [--idle 60 300] [--target bookworm+redis]

Needs root and what the system tests need (tests/system/README.md); run it
alone, not next to a system test run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "system"), str(REPO)]

from container import Container, target_named  # noqa: E402
from mailhost import (  # noqa: E402
    CLIENTS_V4,
    configure_mail_host,
    smtp_try,
    without_idle_smtpd,
)
from product import build_deb, install_product  # noqa: E402

from pbs_activated.admin import postfix  # noqa: E402

SCALE = 10.0
CLIENTS = 12
MASTER_MAX_IDLE = 100.0
"""Postfix's default master.cf max_idle: an idle smtpd process exits after it."""
GAP_MEDIAN, GAP_MIN, GAP_MAX = 40.0, 5.0, 600.0
"""Seconds between a client's bursts, before compression."""
SAMPLE = """
n=0; rss=0
for p in $(pgrep -f 'pbs-activated/policy policy$'); do
  r=$(awk '/^VmRSS/ {print $2}' /proc/$p/status 2>/dev/null) && [ -n "$r" ] &&
    n=$((n+1)) && rss=$((rss+r))
done
echo "$n $rss $(pgrep -cx smtpd) $(pgrep -f 'pbs-activated/policy policy$' | tr '\\n' ' ')"
"""


def restrictions(max_idle: float) -> str:
    """The recommended smtpd_relay_restrictions with check_policy_service's max_idle replaced."""
    options = [
        (name, f"{max_idle:g}s" if name == "max_idle" else value)
        for name, value in postfix.POLICY_OPTIONS
    ]
    text = ", ".join(f"{name}={value}" for name, value in options)
    service = f"check_policy_service {{ {postfix.POLICY_SERVICE}, {text} }}"
    return ", ".join([*postfix.PERMITTED_FIRST, service, postfix.REFUSAL])


def client(ct: Container, source: str, until: float, rng: random.Random, errors: list[str]) -> None:
    """One mail client: bursts of sessions, idle gaps between them (compressed)."""
    time.sleep(rng.uniform(0, GAP_MEDIAN / SCALE))
    while time.monotonic() < until:
        for _ in range(rng.randint(1, 5)):
            try:
                [(code, _)] = smtp_try(ct, source, ["bob@example.test"])
                if code != 250:
                    errors.append(f"{source}: {code}")
            except RuntimeError as error:
                errors.append(str(error)[:200])
        gap = min(GAP_MAX, max(GAP_MIN, rng.lognormvariate(0, 1) * GAP_MEDIAN))
        time.sleep(gap / SCALE)


def run(ct: Container, max_idle: float, minutes: float, seed: int) -> dict[str, float]:
    """Play the mix for `minutes` (real) with check_policy_service max_idle = `max_idle`
    (uncompressed seconds); return what the samples say."""
    ct.run(["postconf", "-e", f"max_idle={MASTER_MAX_IDLE / SCALE:g}s"])
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={restrictions(max_idle / SCALE)}"])
    without_idle_smtpd(ct)
    rng = random.Random(seed)
    until = time.monotonic() + minutes * 60
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=client, args=(ct, source, until, random.Random(rng.random()), errors)
        )
        for source in CLIENTS_V4[-CLIENTS:]
    ]
    for thread in threads:
        thread.start()
    handlers, rss, smtpd = [], [], []
    seen: set[str] = set()
    while time.monotonic() < until:
        started = time.monotonic()
        count, kib, processes, *pids = ct.run(["sh", "-c", SAMPLE]).stdout.split()
        handlers.append(int(count))
        rss.append(int(kib) / 1024)
        smtpd.append(int(processes))
        seen.update(pids)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    for thread in threads:
        thread.join()
    return {
        "max_idle": max_idle,
        "handlers_mean": statistics.fmean(handlers),
        "handlers_peak": max(handlers),
        "rss_mib_mean": statistics.fmean(rss),
        "rss_mib_peak": max(rss),
        "rss_mib_per_handler": statistics.fmean(
            r / h for r, h in zip(rss, handlers, strict=True) if h
        )
        if any(handlers)
        else 0.0,
        "smtpd_mean": statistics.fmean(smtpd),
        "handler_starts": len(seen),
        "errors": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="real minutes per setting")
    parser.add_argument("--idle", type=float, nargs="+", default=[60.0, 300.0])
    parser.add_argument("--target", default="bookworm+redis")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    deb = build_deb()
    with Container(target_named(args.target)) as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        print(
            f"{CLIENTS} clients, {args.minutes:g} min per setting = "
            f"{args.minutes * SCALE:g} min of the site (time / {SCALE:g}), "
            f"master max_idle {MASTER_MAX_IDLE:g}s"
        )
        print(
            "max_idle  handlers(mean/peak)  RSS MiB(mean/peak)  MiB/handler  smtpd  starts  errors"
        )
        for max_idle in args.idle:
            r = run(ct, max_idle, args.minutes, args.seed)
            print(
                f"{r['max_idle']:>6g}s  {r['handlers_mean']:>8.1f} / {r['handlers_peak']:<4g}"
                f"  {r['rss_mib_mean']:>9.1f} / {r['rss_mib_peak']:<7.1f}"
                f"  {r['rss_mib_per_handler']:>10.1f}  {r['smtpd_mean']:>5.1f}"
                f"  {r['handler_starts']:>6g}  {r['errors']:>6g}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
