"""`grant`, `revoke`, `list` and `check`: an administrator's view of the store."""

from __future__ import annotations

import argparse
import os
import sys

from pbs_activated import acl, addresses, audit, defaults, keys
from pbs_activated.config import Config, ConfigError, RedisSettings, parse_redis_url, read_secret
from pbs_activated.decision import decide
from pbs_activated.errors import StoreError
from pbs_activated.lookup import Lookup
from pbs_activated.protocol import Request
from pbs_activated.writer import Writer

EXIT_NOPERM = 77
"""sysexits.h's EX_NOPERM: the caller may not do this, whatever the arguments."""


class NotAnAdministrator(Exception):
    """The caller is neither root nor able to read the admin secret."""


def run(arguments: argparse.Namespace, config: Config) -> int:
    """Run one admin subcommand; return the exit status."""
    try:
        as_administrator(config.redis)
    except NotAnAdministrator:
        return _fail(
            f"permission denied: run as root or as a member of group {defaults.ADMIN_GROUP}",
            EXIT_NOPERM,
        )
    except ConfigError as error:
        return _fail(str(error), 2)
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
        if arguments.command == "migrate":
            from pbs_activated import migrate

            return migrate.run(arguments.source, config, arguments.only_to_own_store)
        return check(config, address)
    except StoreError as error:
        return _fail(str(error))


def as_administrator(settings: RedisSettings) -> None:
    """Log in as pbs-admin, or refuse a caller who may not administer.

    Every admin command, `list` and `check` included (they show who logged in
    from where: personal data), needs root or the admin secret, which only
    root and group pbs-activated-admin can read. With component users the CLI
    logs in as pbs-admin with that secret, through the admin socket when the
    store is the package's own (its directory is closed to people).
    """
    path = settings.admin_password_file
    readable = os.access(path, os.R_OK)
    if not readable and os.geteuid() != 0:
        raise NotAnAdministrator(path)
    if not settings.component_users():
        return
    if settings.own_store():
        parse_redis_url(defaults.STORE_ADMIN_URL, settings)
    settings.username = acl.ADMIN_USER
    if readable:
        settings.password = read_secret(path)


def grant(config: Config, address: str, user: str, lifetime: int | None) -> int:
    """Authorize an address for `lifetime` seconds from now."""
    if addresses.is_local(address):
        return _fail(f"{address} is loopback or link-local: never authorized", 2)
    seconds = config.authorization.lifetime if lifetime is None else lifetime
    if seconds <= 0:
        return _fail("--lifetime must be positive", 2)
    expires = keys.now_ms() + seconds * 1000
    changed = Writer(config.redis).authorize(address, user, expires)
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
    if not Writer(config.redis).revoke(address):
        return _fail(f"{address} was not authorized")
    audit.send(
        audit.NOTICE, f"revoked {address} by hand", PBS_EVENT="revoke", PBS_CLIENT_ADDRESS=address
    )
    return 0


def list_(config: Config) -> int:
    """Print address, user and whole seconds left, one authorization per line."""
    for address, user, seconds_left in Writer(config.redis).list_authorized():
        left = "forever" if seconds_left == float("inf") else str(int(seconds_left))
        print(f"{address}\t{user or '-'}\t{left}")
    return 0


def check(config: Config, address: str) -> int:
    """Print the action the handler would answer at RCPT, and why on stderr."""
    request = Request(
        {"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": address}
    )
    lookup = Lookup(config.redis)
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
