"""`grant`, `revoke`, `list` and `check`: an administrator's view of the store."""

from __future__ import annotations

import argparse
import sys

from pbs_activated import addresses, audit, store
from pbs_activated.config import Config
from pbs_activated.decision import decide
from pbs_activated.protocol import Request


def run(arguments: argparse.Namespace, config: Config) -> int:
    """Run one admin subcommand; return the exit status."""
    try:
        address = addresses.normalize(arguments.address) if "address" in arguments else ""
    except addresses.InvalidAddress as error:
        return _fail(str(error), 2)
    try:
        if arguments.command == "grant":
            return grant(config, address, arguments.user, arguments.lifetime)
        if arguments.command == "revoke":
            return revoke(config, address)
        if arguments.command == "list":
            return list_(config)
        return check(config, address)
    except store.StoreUnavailable as error:
        return _fail(str(error))
    except Exception as error:  # redis-py's errors: connection, auth, timeouts
        if type(error).__module__.startswith("redis"):
            return _fail(f"Redis: {error}")
        raise


def grant(config: Config, address: str, user: str, lifetime: int | None) -> int:
    """Authorize an address for `lifetime` seconds from now."""
    if addresses.is_local(address):
        return _fail(f"{address} is loopback or link-local: never authorized", 2)
    seconds = config.authorization.lifetime if lifetime is None else lifetime
    if seconds <= 0:
        return _fail("--lifetime must be positive", 2)
    expires = store.now_ms() + seconds * 1000
    changed = store.authorize(store.connect(config.redis), address, user, expires)
    if not changed:
        print(f"{address} is already authorized for longer", file=sys.stderr)
        return 0
    audit.send(
        audit.NOTICE,
        f"granted {address} for {seconds} s by hand",
        PBS_EVENT="grant",
        PBS_CLIENT_ADDRESS=address,
        PBS_USER=user,
        PBS_EXPIRES=expires // 1000,
    )
    return 0


def revoke(config: Config, address: str) -> int:
    """Withdraw an authorization; exit 1 if there was none."""
    if not store.revoke(store.connect(config.redis), address):
        return _fail(f"{address} was not authorized")
    audit.send(
        audit.NOTICE, f"revoked {address} by hand", PBS_EVENT="revoke", PBS_CLIENT_ADDRESS=address
    )
    return 0


def list_(config: Config) -> int:
    """Print address, user and whole seconds left, one authorization per line."""
    for address, user, seconds_left in store.list_authorized(store.connect(config.redis)):
        left = "forever" if seconds_left == float("inf") else str(int(seconds_left))
        print(f"{address}\t{user or '-'}\t{left}")
    return 0


def check(config: Config, address: str) -> int:
    """Print the action the handler would answer at RCPT, and why on stderr."""
    request = Request(
        {"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": address}
    )
    lookup = store.Lookup(config.redis)
    try:
        decision = decide(request, config.policy, lookup.user_for)
    finally:
        lookup.close()
    print(decision.action)
    user = f", user {decision.user}" if decision.user else ""
    print(f"{decision.reason}{user}", file=sys.stderr)
    return 0


def _fail(message: str, status: int = 1) -> int:
    print(f"pbs-activated: {message}", file=sys.stderr)
    return status
