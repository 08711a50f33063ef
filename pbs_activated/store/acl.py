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
  replicas) and cannot read a value. The script also asks whether the login's
  user is denied (EXISTS on `pbs:deny:<user>`): the reader may read those keys
  (`%R~`, Redis 7's read-only key pattern) and never write one, so a
  compromised reader cannot lift a deny.
- `pbs-admin`: the CLI lists, grants and revokes, and denies and allows users.

A cluster (docs/cluster.md) talks TCP between hosts, so two more users exist
there, on every server, for Redis's own traffic; neither may touch a key:

- `pbs-replica`: a replica logging in to its master (`masteruser`,
  `masterauth`): PSYNC and REPLCONF, and SYNC, which Valkey's dual-channel
  replication sends and which gives nothing PSYNC does not.
- `pbs-sentinel`: the Sentinels logging in to the servers (`sentinel
  auth-user`, `auth-pass`) to watch them and to carry out a failover.

The Sentinels have ACL users of their own (SENTINEL_RULES, lines of
sentinel.conf): `default`, the components asking where the servers are, with
the `sentinel-password` secret, and `pbs-sentinel`, the Sentinels talking to
each other. An open Sentinel would let anyone who reaches it name a master of
their own, whose data says who may relay.

Each rule below was checked against Redis 7.0 and Valkey 8.1 with ACL LOG: a
failover breaks without any of the rules marked "needed", and the others
avoid a denial logged at every connection or keep a Sentinel's remedy working.

The passwords are random secrets the package generates at installation
(/etc/pbs-activated/secrets/, root only but for the admin's); the store is
given their SHA-256 only, so its ACL file holds no secret. `pbs-activated
store-acl` writes the file from the secrets (pbs-store.service runs it before
every start), and for a cluster an administrator uses the same command, with
the same secrets, to make the ACL file of every server, so the rules have this
one home. A user without a secret is left out of the file, so the single-host
store, which has no `pbs-replica` or `pbs-sentinel` secret, knows neither.
"""

from __future__ import annotations

import hashlib
import os

from pbs_activated.config import defaults
from pbs_activated.store import keys

POLICY_USER = "pbs-policy"
JOURNAL_USER = "pbs-journal"
ADMIN_USER = "pbs-admin"
REPLICA_USER = "pbs-replica"
SENTINEL_USER = "pbs-sentinel"

SENTINEL_CLIENT_SECRET = defaults.SENTINEL_CREDENTIAL
"""The secret the components log in to the Sentinels with (their `default` user):
a file of this name in the secrets directory, handed to the units as the
`sentinel-password` credential."""

_KEYS = f"~{keys.CLIENT_PATTERN}"
_DENY_READ = f"%R~{keys.DENY_PATTERN}"
"""The deny keys, read-only: what the authorize script's EXISTS needs."""
_DENY_KEYS = f"~{keys.DENY_PATTERN}"
_HELLO = "&__sentinel__:hello"
"""The one channel Sentinels use, on the servers and among themselves."""

# Each component's commands. AUTH and HELLO need no grant; SELECT is allowed so a
# non-zero `db` in the url works; PING is how the reader and the CLI see the
# store answer. The authorize script's own calls are checked against the user
# running EVAL, so they are listed with it.
_WRITE = ("+eval", "+exists", "+pexpiretime", "+pexpireat", "+set", "+role", "+wait")
"""writer.Writer.authorize: the script (and the calls it makes), then ROLE and WAIT."""

RULES: dict[str, tuple[str, ...]] = {
    POLICY_USER: (_KEYS, "+get", "+mget", "+ping", "+select"),
    JOURNAL_USER: (_KEYS, _DENY_READ, *_WRITE, "+ping", "+select"),
    ADMIN_USER: (
        _KEYS,
        _DENY_KEYS,
        "+get",
        "+mget",
        "+scan",
        "+pttl",
        "+del",
        *_WRITE,
        "+ping",
        "+select",
        "+info",
        "+time",
    ),
    # Needed: PSYNC and REPLCONF. A replica's PING comes before its AUTH, so it
    # needs no grant; SYNC is Valkey's dual-channel replication (off by default).
    REPLICA_USER: ("+psync", "+replconf", "+sync"),
    # Needed: the hello channel, SUBSCRIBE and PUBLISH (Sentinels find each other
    # through it), PING and INFO (watching), and the reconfiguration Sentinel sends
    # as one transaction: MULTI, SLAVEOF, CONFIG REWRITE, CLIENT KILL, EXEC (a
    # command refused inside it aborts the whole). SCRIPT KILL ends a runaway
    # script that makes a master look down; CLIENT SETNAME names its connections.
    SENTINEL_USER: (
        _HELLO,
        "+subscribe",
        "+publish",
        "+ping",
        "+info",
        "+multi",
        "+slaveof",
        "+config|rewrite",
        "+client|kill",
        "+exec",
        "+script|kill",
        "+client|setname",
    ),
}
"""The users of every server and what each may do; every user is first reset to nothing."""

USERS = tuple(RULES)

SENTINEL_RULES: dict[str, tuple[str, ...]] = {
    # The components: where the master and the replicas are (the handler asks
    # GET-MASTER-ADDR-BY-NAME and REPLICAS, redis-py asks MASTERS), nothing else.
    "default": (
        "+sentinel|get-master-addr-by-name",
        "+sentinel|replicas",
        "+sentinel|masters",
    ),
    # The other Sentinels. Needed: IS-MASTER-DOWN-BY-ADDR (the vote for a
    # failover); PING, PUBLISH on the hello channel and CLIENT SETNAME are what
    # each sends to its peers besides.
    SENTINEL_USER: (
        _HELLO,
        "+ping",
        "+publish",
        "+sentinel|is-master-down-by-addr",
        "+client|setname",
    ),
}
"""The users of every Sentinel (sentinel.conf's `user` lines) and what each may do."""

SENTINEL_SECRETS = {"default": SENTINEL_CLIENT_SECRET, SENTINEL_USER: SENTINEL_USER}
"""Which secret each Sentinel user logs in with."""


def user_line(user: str, password: str, rules: tuple[str, ...] | None = None) -> str:
    """One ACL line: the user on, its password's hash, its keys and commands only."""
    digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
    granted = " ".join(RULES[user] if rules is None else rules)
    return f"user {user} reset on #{digest} resetchannels -@all {granted}"


def acl_file(passwords: dict[str, str]) -> str:
    """The store's whole ACL file for these passwords, `default` disabled.

    A user without a password is left out: it cannot log in at all.
    """
    lines = ["user default reset off resetchannels -@all"]
    lines += [user_line(user, passwords[user]) for user in USERS if passwords.get(user)]
    return "\n".join(lines) + "\n"


def sentinel_acl(passwords: dict[str, str]) -> str:
    """The `user` lines of every Sentinel's sentinel.conf for these secrets.

    `default` is always there, and off without its secret: left out, it would
    be Redis's own default, open to anyone without a password.
    """
    lines = []
    for user, rules in SENTINEL_RULES.items():
        password = passwords.get(SENTINEL_SECRETS[user])
        if password:
            lines.append(user_line(user, password, rules))
        elif user == "default":
            lines.append("user default reset off resetchannels -@all")
    return "\n".join(lines) + "\n"


def read_passwords(directory: str, names: tuple[str, ...] = USERS) -> dict[str, str]:
    """The secrets found in `directory`, one file per user named after it (first line).

    `names` are the files to look for: the servers' users by default; add
    SENTINEL_CLIENT_SECRET for `sentinel_acl`.
    """
    from pbs_activated.config.load import read_secret

    passwords = {}
    for name in names:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            passwords[name] = read_secret(path)
    return passwords


def write_acl_file(path: str, passwords: dict[str, str]) -> None:
    """Write the ACL file atomically, readable by its owner only."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(acl_file(passwords))
    os.replace(temporary, path)
