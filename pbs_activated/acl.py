"""Who may do what in the store: one Redis ACL user per component, least privilege.

Why: a store that any local process can write to lets any local user (a shell
account, a webmail running as www-data, a compromised daemon) make Postfix relay.
The private store (pbs-store.service) therefore disables Redis's `default` user
and knows only these users, each allowed exactly the commands its component
sends, on our key prefix only:

- `pbs-policy`: the handler and the Accept=no server read authorizations (GET,
  MGET) and nothing else; a compromised handler can neither create nor extend one.
- `pbs-journal`: the reader writes them (the authorize script, which calls
  PEXPIRETIME, PEXPIREAT and SET inside; ROLE and WAIT to confirm a write on
  replicas) and cannot read a value.
- `pbs-admin`: the CLI lists, grants and revokes.

The passwords are random secrets the package generates at installation
(/etc/pbs-activated/secrets/, root only but for the admin's); the store is
given their SHA-256 only, so its ACL file holds no secret. `pbs-activated
store-acl` writes the file from the secrets (pbs-store.service runs it before
every start), and for a cluster an administrator uses the same command to make
the ACL file of every server, so the rules have this one home.
"""

from __future__ import annotations

import hashlib
import os

from pbs_activated import defaults

POLICY_USER = "pbs-policy"
JOURNAL_USER = "pbs-journal"
ADMIN_USER = "pbs-admin"

_KEYS = f"~{defaults.KEY_PREFIX}*"

# Each component's commands. AUTH and HELLO need no grant; SELECT is allowed so a
# non-zero `db` in the url works; PING is how the reader and the CLI see the
# store answer. The authorize script's own calls are checked against the user
# running EVAL, so they are listed with it.
RULES: dict[str, tuple[str, ...]] = {
    POLICY_USER: (_KEYS, "+get", "+mget", "+ping", "+select"),
    JOURNAL_USER: (
        _KEYS,
        "+eval",
        "+pexpiretime",
        "+pexpireat",
        "+set",
        "+role",
        "+wait",
        "+ping",
        "+select",
    ),
    ADMIN_USER: (
        _KEYS,
        "+get",
        "+mget",
        "+scan",
        "+pttl",
        "+del",
        "+eval",
        "+pexpiretime",
        "+pexpireat",
        "+set",
        "+role",
        "+wait",
        "+ping",
        "+select",
        "+info",
        "+time",
    ),
}
"""The users and what each may do; every user is first reset to nothing."""

USERS = tuple(RULES)


def user_line(user: str, password: str) -> str:
    """One ACL file line: the user on, its password's hash, its keys and commands only."""
    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    rules = " ".join(RULES[user])
    return f"user {user} reset on #{digest} resetchannels -@all {rules}"


def acl_file(passwords: dict[str, str]) -> str:
    """The store's whole ACL file for these passwords, `default` disabled.

    A user without a password is left out: it cannot log in at all.
    """
    lines = ["user default reset off resetchannels -@all"]
    lines += [user_line(user, passwords[user]) for user in USERS if passwords.get(user)]
    return "\n".join(lines) + "\n"


def read_passwords(directory: str) -> dict[str, str]:
    """The secrets found in `directory`, one file per user named after it (first line)."""
    from pbs_activated.config import read_secret

    passwords = {}
    for user in USERS:
        path = os.path.join(directory, user)
        if os.path.exists(path):
            passwords[user] = read_secret(path)
    return passwords


def write_acl_file(path: str, passwords: dict[str, str]) -> None:
    """Write the ACL file atomically, readable by its owner only."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(acl_file(passwords))
    os.replace(temporary, path)
