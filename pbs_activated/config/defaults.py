"""Every default of pbs-activated, in one place, with the reason it is what it is.

This module is imported by the policy handler on every Postfix connection, so it
holds plain constants, and `environment`, which reads the variables that
override them for the handler's modules, and imports only what the interpreter
loads before its first line.
"""

import posix
import sys

CONFIG_PATH = "/etc/pbs-activated/pbs-activated.toml"
"""Debian's place for a package's configuration; `--config` or $PBS_ACTIVATED_CONFIG override it."""

CONFIG_ENVIRONMENT = "PBS_ACTIVATED_CONFIG"

# [redis]
REDIS_URL = "unix:///run/pbs-store/store.sock"
"""The package's own store, pbs-store.service: a unix socket in a directory only the
services' group may enter, and no TCP listener, so no other local user can reach it."""

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
"""Where a `redis://` URL without host or port points, as redis-cli and redis-py do."""

SENTINEL_PORT = 26379
"""Sentinel's own port, for a `sentinels` entry without one."""

STORE_ADMIN_URL = "unix:///run/pbs-store-admin.sock"
"""How the CLI reaches the package's store: pbs-store-admin.socket, a proxy that root
and the members of ADMIN_GROUP may connect to (the store's own directory is closed
to them: its group is the services' alone, never a login group)."""

STORE_CREDENTIALS = "auto"
"""Whose user name and password a component logs in with (`[redis] credentials`).

"component": its own ACL user (acl.py), named by the unit's `store-user` credential
(the CLI: pbs-admin), with the secret of the unit's `store-password` credential
(the CLI: ADMIN_PASSWORD_FILE). "url": only what the url, `password_file` or the
`redis-password` credential say, as before 0.2.0. "auto": "component" for the
package's own store (`url` unset or REDIS_URL, no `sentinels`), "url" once the
administrator named another, so an upgraded site that points at its own Redis
keeps working unchanged; a cluster whose servers carry the ACL users says
"component".
"""

STORE_USER_CREDENTIAL = "store-user"
STORE_PASSWORD_CREDENTIAL = "store-password"
"""The systemd credentials naming a long-lived service's ACL user and its secret."""

STORE_USER_ENVIRONMENT = "PBS_ACTIVATED_STORE_USER"
STORE_PASSWORD_FILE_ENVIRONMENT = "PBS_ACTIVATED_STORE_PASSWORD_FILE"
"""The same for the per-connection handler, which credentials would slow tenfold
(config.load.resolve_secrets): its unit's environment names the user and a file."""

ADMIN_GROUP = "pbs-activated-admin"
"""Members may run the admin commands, as root may: they can read the admin secret."""

ADMIN_PASSWORD_FILE = "/etc/pbs-activated/secrets/pbs-admin"
"""The pbs-admin user's secret: root:pbs-activated-admin, mode 0640 (made by postinst)."""

REDIS_TIMEOUT = 1.5
"""Seconds one Redis operation may take, connection included.

Postfix waits `smtpd_policy_service_timeout` (100 s) for us, but a relaying client
should hear a 4xx within 2 s when Redis is gone, so the whole budget stays under it.
"""

REDIS_TIMEOUT_SLACK = 0.05
"""Seconds by which one wait on Redis may overrun the deadline: the price of not
re-arming the socket timeout (a system call) before every send and receive."""

REDIS_PASSWORD_FILE = ""
"""A file holding the Redis password, so no secret sits in the world-readable config.

Empty means: the systemd credential `redis-password` if the unit loads one, else none.
"""

REDIS_CREDENTIAL = "redis-password"
SENTINEL_CREDENTIAL = "sentinel-password"

SENTINELS: tuple[str, ...] = ()
"""`host:port` of Redis Sentinels; empty means `url` names the server directly."""

SENTINEL_URL = "redis://"
"""What `url` means with Sentinels when it is not set: TCP to whatever they name,
no password in it, database 0 (the package's store is a local unix socket)."""

SENTINEL_SERVICE = "pbs"
SENTINEL_PASSWORD_FILE = ""
"""A file holding the Sentinels' password; empty: the `sentinel-password` credential, else none."""


# [authorization]
LIFETIME = 1800
"""Seconds an address may relay after its login: long enough to write a mail after
fetching mail, short enough that a dynamic address is not inherited for long."""

IGNORE_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
"""Logins from these never authorize: webmail and local proxies log `rip=127.0.0.1`."""

# [policy]
ACTION_AUTHORIZED = "OK"
"""An address with a recent login may relay."""

ACTION_UNAUTHORIZED = "DUNNO"
"""Unknown address: let the next restriction decide, so `reject_unauth_destination`
refuses relaying while local mail still arrives. Never REJECT here."""

ACTION_UNAVAILABLE = "DEFER_IF_REJECT 4.7.1 POP-before-SMTP lookup unavailable, try again later"
"""Redis or the config is broken: a relay attempt gets 4xx and is retried, local mail flows."""

IDLE_TIMEOUT = 330.0
"""Seconds a handler waits for the next request. Longer than Postfix's
`smtpd_policy_service_max_idle` (300 s), so Postfix closes first and never finds a
connection closed under it."""

LOGIN_WAIT = 1.0
"""Seconds a relay attempt with no authorization may wait for a login on its way.

Only under the recommended line (decision.awaits_login), once per address and
policy connection. A client may send the instant its POP3 session ends, and
journald tells its readers of a new entry 250-500 ms after writing it: the
handler wakes the reader (WAKE_SOCKET), which then reads the login at once, and
looks again while it waits. On one host the login arrives within milliseconds
(README, "Right after a login"); the bound covers journald's own notice (500 ms)
and a replica's lag in a cluster whose reader is on another host. A stranger
pays it once per address and connection, before the 554; 10 times less than
the line's `timeout=10s`."""

WAKE_SOCKET = "/run/pbs-journal/wake"
"""The reader's wake-up socket (a datagram socket in its RuntimeDirectory, writable
by the services' group only): a handler that waits for a login sends it an empty
datagram, so the reader reads the journal now instead of at journald's notice.
It carries nothing: no address, no answer; any number of them is one wake-up."""

WAKE_SOCKET_ENVIRONMENT = "PBS_ACTIVATED_WAKE_SOCKET"
"""Names another wake-up socket (tests: a reader and handlers outside systemd)."""

MAX_LINE_LENGTH = 262144
"""Bytes in one `name=value` line: 256 KiB, far above anything a site's Postfix sends.

Postfix passes on what smtpd accepted, and its longest attributes come from the
client's own command lines (`helo_name`, `sender`, `recipient`, `sasl_username`),
each up to `line_length_limit`: 2048 bytes by default, with no upper bound of
Postfix's own, and raised by sites (8 KiB, 64 KiB) for clients with long lines.
`policy_context` is whatever the administrator writes, and the certificate fields
are encoded. A limit near the default would cost such a site its answers (a
line over it closes the connection without one, and Postfix defers); this one
is 128 times Postfix's default and 4 times the largest raise we know of. It
bounds only a peer that is not Postfix (the socket is Postfix's alone, the TCP
example's is local), and a line over it is logged and closes its connection."""

MAX_REQUEST_SIZE = 1048576
"""Bytes in one request: 1 MiB, room for four attributes at MAX_LINE_LENGTH.

A request from Postfix is about 1 KiB; at most the attributes under
MAX_LINE_LENGTH's reasoning can grow, and four of them at that limit (plus the
rest) still fit. What it bounds is memory: the policy server holds up to one
partial request per connection, so 512 connections (the socket's
MaxConnections) cost at most 512 MiB, and only if none of them is Postfix."""

# [journal]
SERVER_UNITS: dict[str, tuple[str, ...]] = {
    "dovecot": ("dovecot.service",),
    # One unit per daemon: the TLS ones (995, 993) are units of their own.
    "courier": (
        "courier-pop.service",
        "courier-pop-ssl.service",
        "courier-imap.service",
        "courier-imap-ssl.service",
    ),
    # cyrmaster runs imapd and pop3d (plain and TLS) as its children.
    "cyrus": ("cyrus-imapd.service",),
}
"""The POP/IMAP servers `[journal] servers` may name, and the units Debian runs each as
(the same names on Debian 12 and 13, checked by the booted-system tests)."""

JOURNAL_SERVERS: tuple[str, ...] = ("dovecot",)
"""Dovecot: what Debian installs for `imap-server` and `pop3-server` first, and 0.1's only unit."""

JOURNAL_UNITS: tuple[str, ...] = ()
"""Empty: the units of `servers`. Only entries whose trusted _SYSTEMD_UNIT is one of
the units can authorize."""

JOURNAL_IMAP = True
"""IMAP logins authorize as POP3 logins do: clients that check mail over IMAP send too."""

JOURNAL_FORMATS: tuple[str, ...] = ()
"""Empty: the formats of `servers`, or every format when `units` is set (as 0.2's
default `["dovecot", "courier"]` was, for sites that named Courier's units)."""
JOURNAL_PATTERN = ""
"""A site regular expression with named groups `user` and `address`; empty means none."""

JOURNAL_DIRECTORY = ""
"""Read journal files from this directory instead of the system journal (tests, offline)."""

CURSOR_FILE = "cursor"
"""Name of the cursor file in the reader's StateDirectory."""

RETRY_INITIAL = 0.1
RETRY_MAXIMUM = 2.0
"""Seconds between Redis retries of the reader: quick at first, then backing off to
a pause short enough that logins flow again within 2 s of Redis (or a promoted
replica) answering; a retry every 2 s costs an unreachable Redis nothing."""

JOURNAL_SOCKET = "/run/systemd/journal/socket"
"""journald's native protocol socket; the handler writes its audit entries there."""

JOURNAL_SEND_TIMEOUT = 1.0
"""Seconds an audit entry may wait for room in journald's socket queue."""

JOURNAL_SOCKET_ENVIRONMENT = "PBS_ACTIVATED_JOURNAL_SOCKET"
"""Names another datagram socket for audit entries (tests without journald)."""

SYSLOG_IDENTIFIER = "pbs-activated"

# [redis]: clusters (replication, Sentinel) and TLS
MIN_REPLICAS_ACKNOWLEDGED = "auto"
"""Replicas that must confirm a write (`WAIT`) before the reader counts it as done.

A master that dies between acknowledging a write and replicating it loses the
write, and Sentinel then promotes a replica without it: a login silently gone.
"auto" asks for one replica whenever the master has a replica online, and for
none on a lone Redis, which has nobody to wait for; with Sentinels, always for
one (config.check.apply_replication says why). A number asks for exactly that many,
so a write is refused (and re-sent) while fewer are online.
"""

REPLICATION_TIMEOUT = 0.5
"""Seconds `WAIT` may block for the replicas' confirmation.

A replica on the same network confirms within a millisecond; a write not
confirmed in half a second is re-sent by the reader, which is harmless (the
write is idempotent). Must stay below `timeout`, the socket's own limit.
"""

TLS_CA_FILE = ""
"""PEM file of the CA that signed the Redis (and Sentinel) certificates, for `rediss://`.

Empty means the system's trusted CAs (ca-certificates). The server's certificate
must name the host we connect to: a DNS name, or an IP address for the addresses
Sentinel hands out.
"""

TLS_CERT_FILE = ""
TLS_KEY_FILE = ""
"""Client certificate and key, for servers with `tls-auth-clients yes` (Redis's default).

Empty means none. The key file, like a password, belongs to a file only the
service can read, or to a systemd credential.
"""

REDIS_TLS_KEY_CREDENTIAL = "redis-tls-key"
"""The systemd credential holding the client key when `tls_key_file` is empty."""

# The journal reader
STATE_DIRECTORY = "/var/lib/pbs-activated"
"""Where the cursor lives when systemd gives no $STATE_DIRECTORY (the unit's StateDirectory=)."""

JOURNAL_TRANSPORTS: tuple[str, ...] = ("syslog", "journal", "stdout")
"""Trusted `_TRANSPORT`s a login may arrive by: what a mail server writes with.

`driver`, `kernel` and `audit` entries are journald's, the kernel's and the audit
subsystem's words about a process, never the mail server's own login lines.
"""

CURSOR_SAVE_EVERY = 1000
"""Entries read between cursor saves while catching up (it is also saved whenever
the reader has read everything). Each save is an fsync; replaying up to this many
entries after a crash costs far less than an fsync per entry."""

STATUS_INTERVAL = 1.0
"""Seconds between two sd_notify STATUS updates that only change the reader's counts."""


def environment(name: str) -> str | None:
    """Return $name, as os.environ has it, without importing os on the handler's path.

    `import os` costs a handler ~1 ms of its start, most of it `_collections_abc`,
    and the handler needs nothing of os that posix does not hold. Only
    os.environ is more than posix's: a str view that follows changes made
    through it. So once os is loaded (the CLI, the reader, the tests), it is
    asked; before, nobody can have changed the environment through it, and
    posix.environ, the environment the process started with, decoded as os
    decodes it, is the same answer.
    """
    os = sys.modules.get("os")
    if os is not None:
        known: str | None = os.environ.get(name)
        return known
    value = posix.environ.get(name.encode())
    if value is None:
        return None
    return value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
