"""The `pbs-activated` command: the handler, the journal reader and the admin tools.

`pbs-activated policy` runs once per Postfix connection, so its two spellings
(`policy`, `--config PATH policy`) are recognised by hand before argparse, which
costs milliseconds to import, is ever loaded.
"""

from __future__ import annotations

import sys

from pbs_activated.config import defaults
from pbs_activated.config.load import config_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[-1:] == ["policy"]:
        option = _config_option(arguments[:-1])
        if option is not None:
            from pbs_activated.answer import handler

            return handler.main(config_path(option or None))
    return run(parse_arguments(arguments))


def _config_option(globals_: list[str]) -> str | None:
    """Return the --config value ('' if absent), or None if the options are not that simple."""
    if not globals_:
        return ""
    if len(globals_) == 2 and globals_[0] == "--config":
        return globals_[1]
    if len(globals_) == 1 and globals_[0].startswith("--config="):
        return globals_[0].removeprefix("--config=")
    return None


def parse_arguments(arguments: list[str]) -> argparse.Namespace:
    """Parse the full command line (everything but the handler's fast path)."""
    import argparse

    from pbs_activated import __version__

    parser = argparse.ArgumentParser(
        prog="pbs-activated",
        description="POP-before-SMTP relay authorization for Postfix.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${defaults.CONFIG_ENVIRONMENT}"
        f" or {defaults.CONFIG_PATH})",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("policy", help="answer the Postfix policy connection on stdin/stdout")
    commands.add_parser(
        "policy-server",
        help="answer every Postfix connection of an Accept=no socket from systemd in one process",
    )
    journal = commands.add_parser("journal", help="follow the journal and authorize logins")
    journal.add_argument(
        "--directory", metavar="DIR", help="read journal files from DIR, not the system journal"
    )
    grant = commands.add_parser("grant", help="authorize an address by hand")
    grant.add_argument("address")
    grant.add_argument("--user", default="", help="who this is for (shown in list and audit)")
    grant.add_argument(
        "--lifetime", type=int, metavar="SECONDS", help="default: [authorization] lifetime"
    )
    revoke = commands.add_parser(
        "revoke", help="withdraw an address's authorization, or every one of a user's"
    )
    revoke.add_argument("address", nargs="?")
    revoke.add_argument("--user", metavar="NAME", help="every authorization of this user")
    listing = commands.add_parser(
        "list", help="show authorized addresses: address, user, seconds left"
    )
    listing.add_argument("--user", metavar="NAME", help="only this user's")
    listing.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    listing.add_argument("--denied", action="store_true", help="the denied users instead")
    deny = commands.add_parser(
        "deny", help="keep a user's logins from authorizing until allowed; withdraw theirs"
    )
    deny.add_argument("name", metavar="USER")
    allow = commands.add_parser("allow", help="lift a deny")
    allow.add_argument("name", metavar="USER")
    check = commands.add_parser("check", help="print what the handler would answer at RCPT")
    check.add_argument("address")
    migrate = commands.add_parser(
        "migrate", help="copy every authorization from another store into this one, expiry kept"
    )
    migrate.add_argument("--from", dest="source", metavar="URL", required=True)
    migrate.add_argument(
        "--only-to-own-store",
        action="store_true",
        help="do nothing unless the configured store is the package's own (the upgrade's case)",
    )
    doctor = commands.add_parser(
        "doctor", help="check the whole chain on this host: Postfix, systemd, logs, store, time"
    )
    doctor.add_argument("--json", action="store_true", help="the findings as JSON")
    report = commands.add_parser(
        "report", help="sum up the journal: logins, relays allowed and refused, per user/address"
    )
    report.add_argument("--since", default="today", help="journalctl's syntax (default: today)")
    report.add_argument("--until", default="", help="journalctl's syntax (default: now)")
    report.add_argument("--json", action="store_true", help="the sums as JSON")
    report.add_argument(
        "--directory", metavar="DIR", default="", help="read journal files from DIR"
    )
    store_acl = commands.add_parser(
        "store-acl", help="write the store's ACL file: one user per component, from the secrets"
    )
    store_acl.add_argument(
        "--secrets",
        metavar="DIR",
        help="one file per user (pbs-policy, pbs-journal, pbs-admin);"
        " default: $CREDENTIALS_DIRECTORY",
    )
    store_acl.add_argument("--output", metavar="FILE", help="default: standard output")
    return parser.parse_args(arguments)


def run(arguments: argparse.Namespace) -> int:
    """Dispatch a parsed command line."""
    from pbs_activated.config import ConfigError
    from pbs_activated.config.load import load

    path = config_path(arguments.config)
    if arguments.command == "policy":
        from pbs_activated.answer import handler

        return handler.main(path)
    if arguments.command == "policy-server":
        from pbs_activated.answer import server

        return server.main(path)
    if arguments.command == "store-acl":
        return store_acl(arguments.secrets, arguments.output)
    try:
        config = load(path)
    except ConfigError as error:
        print(f"pbs-activated: {error}", file=sys.stderr)
        return 2
    if arguments.command == "journal":
        from pbs_activated.reader import follow

        if arguments.directory:
            config.journal.directory = arguments.directory
        return follow.main(config)
    from pbs_activated.admin import commands

    return commands.run(arguments, config)


def store_acl(secrets: str | None, output: str | None) -> int:
    """Write the store's ACL file (acl.py) from the secrets; 2 if there is none to use."""
    import os

    from pbs_activated.store import acl

    directory = secrets or os.environ.get("CREDENTIALS_DIRECTORY", "")
    passwords = acl.read_passwords(directory) if directory else {}
    if not passwords:
        print(
            f"pbs-activated: store-acl: no secret in {directory or '(no directory)'}:"
            f" expected files named {', '.join(acl.USERS)}",
            file=sys.stderr,
        )
        return 2
    if output:
        acl.write_acl_file(output, passwords)
    else:
        sys.stdout.write(acl.acl_file(passwords))
    return 0
