"""`grant`, `revoke`, `list`, `check`, `deny` and `allow`: an administrator's view of the store.

`deny` and `allow` are for a compromised account: while its password is being
reset, none of its logins authorizes anything, on any host of a cluster (the
deny key lives in the store; keys.py), and `deny` withdraws what it had.
"""

from __future__ import annotations

import argparse
import os
import sys

from pbs_activated import addresses, audit
from pbs_activated.answer import Request
from pbs_activated.answer.decision import decide
from pbs_activated.config import Config, ConfigError, RedisSettings, defaults
from pbs_activated.config.load import read_secret
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreError, acl, keys
from pbs_activated.store.lookup import Lookup
from pbs_activated.store.writer import DENIED, GRANTED, Writer

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
    if arguments.command in ("doctor", "report") and not reads_the_journal():
        return _fail(
            f"permission denied: {arguments.command} reads the system journal: run it as root,"
            f" or as a member of {defaults.ADMIN_GROUP} and of systemd-journal or adm",
            EXIT_NOPERM,
        )
    if arguments.command == "doctor":
        from pbs_activated.admin.doctor import examine

        return examine.run(config, arguments.json)
    if arguments.command == "report":
        from pbs_activated.admin import report

        return report.run(arguments.since, arguments.until, arguments.json, arguments.directory)
    try:
        given = getattr(arguments, "address", None)
        address = addresses.normalize(given) if given else ""
    except addresses.InvalidAddress as error:
        return _fail(str(error), 2)
    try:
        if arguments.command == "grant":
            return grant(config, address, arguments.user, arguments.lifetime)
        if arguments.command == "revoke":
            if bool(address) == bool(arguments.user):
                return _fail("revoke needs an address or --user NAME, not both", 2)
            if arguments.user:
                return revoke_user(config, arguments.user)
            return revoke(config, address)
        if arguments.command == "list":
            if arguments.denied:
                return list_denied(config, arguments.json)
            return list_(config, arguments.user, arguments.json)
        if arguments.command == "deny":
            return deny(config, arguments.name)
        if arguments.command == "allow":
            return allow(config, arguments.name)
        if arguments.command == "migrate":
            from pbs_activated.admin import migrate

            return migrate.run(arguments.source, config, arguments.only_to_own_store)
        return check(config, address)
    except StoreError as error:
        return _fail(str(error))


JOURNAL_GROUPS = ("systemd-journal", "adm")
"""The groups whose members journalctl shows the whole system journal."""


def reads_the_journal() -> bool:
    """Whether the caller sees the system journal: root, or a member of JOURNAL_GROUPS."""
    if os.geteuid() == 0:
        return True
    import grp

    groups = set(os.getgroups())
    for name in JOURNAL_GROUPS:
        try:
            if grp.getgrnam(name).gr_gid in groups:
                return True
        except KeyError:
            continue
    return False


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
    outcome = Writer(config.redis).authorize_login(address, user, expires)
    if outcome == DENIED:
        return _fail(f"{user} is denied (pbs-activated allow {user} lifts it)")
    if outcome != GRANTED:
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


def revoke_user(config: Config, user: str) -> int:
    """Withdraw every authorization of `user`, one audit entry each; exit 1 if there was none."""
    removed = Writer(config.redis).revoke_user(user)
    for address in removed:
        _audit_revoke(address, user, f"revoked {address} of {user} by hand")
        print(address)
    if not removed:
        return _fail(f"{user} had no authorization")
    return 0


def _audit_revoke(address: str, user: str, message: str) -> None:
    audit.send(audit.NOTICE, message, PBS_EVENT="revoke", PBS_CLIENT_ADDRESS=address, PBS_USER=user)


def list_(config: Config, user: str | None = None, as_json: bool = False) -> int:
    """Print address, user and whole seconds left, one authorization per line (or JSON).

    With `user`, only that user's. JSON is one array of objects with `address`,
    `user`, `expires` (Unix seconds) and `seconds_left` (null for no expiry).
    """
    now = keys.now_ms()
    entries = [
        (address, holder, expires_ms)
        for address, holder, expires_ms in Writer(config.redis).authorizations()
        if user is None or holder == user
    ]
    if as_json:
        import json

        print(
            json.dumps(
                [
                    {
                        "address": address,
                        "user": holder,
                        "expires": expires_ms // 1000 if expires_ms >= 0 else None,
                        "seconds_left": max(0, (expires_ms - now) // 1000)
                        if expires_ms >= 0
                        else None,
                    }
                    for address, holder, expires_ms in entries
                ],
                indent=1,
            )
        )
        return 0
    for address, holder, expires_ms in entries:
        left = "forever" if expires_ms < 0 else str(max(0, (expires_ms - now) // 1000))
        print(f"{address}\t{holder or '-'}\t{left}")
    return 0


def list_denied(config: Config, as_json: bool = False) -> int:
    """Print every denied user and since when (local time), or JSON (`user`, `since`)."""
    denied = Writer(config.redis).denied()
    if as_json:
        import json

        print(json.dumps([{"user": user, "since": since} for user, since in denied], indent=1))
        return 0
    import time

    for user, since in denied:
        print(f"{user}\t{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(since))}")
    return 0


def deny(config: Config, user: str) -> int:
    """Deny `user`'s logins until `allow`, and withdraw every authorization they have.

    The deny key is written first: a login the reader takes after it cannot
    authorize, and every one taken before it is then found and withdrawn.
    """
    if not user:
        return _fail("deny needs a user name", 2)
    writer = Writer(config.redis)
    if writer.deny(user):
        audit.send(audit.NOTICE, f"denied {user} by hand", PBS_EVENT="deny", PBS_USER=user)
    else:
        print(f"{user} was already denied", file=sys.stderr)
    for address in writer.revoke_user(user):
        _audit_revoke(address, user, f"revoked {address} of {user}: the user is denied")
        print(f"revoked {address}", file=sys.stderr)
    return 0


def allow(config: Config, user: str) -> int:
    """Lift a deny; exit 1 if the user was not denied."""
    if not Writer(config.redis).allow(user):
        return _fail(f"{user} was not denied")
    audit.send(audit.NOTICE, f"allowed {user} again by hand", PBS_EVENT="allow", PBS_USER=user)
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
