"""The configuration: its sections as settings objects, Config, and ConfigError.

Every module that takes settings takes these classes, and every module of the
configuration raises ConfigError, so they live below all of them, in the
package itself: they import nothing of the configuration but its defaults, and
the handler, which imports the package anyway, pays no module of its own for
them. How a file becomes a Config is config.load's; which keys exist and how
each is checked is config.table's and config.check's.

The policy handler builds these on every Postfix connection: plain classes
with __slots__, no dataclasses, no typing at run time.
"""

from __future__ import annotations

from pbs_activated.config import defaults

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network


class ConfigError(ValueError):
    """The configuration file cannot be read or holds a value we refuse."""


class RedisSettings:
    """Where the Redis server is and how to log in, parsed from `[redis] url`."""

    __slots__ = (
        "url",
        "unix_path",
        "host",
        "port",
        "tls",
        "username",
        "password",
        "db",
        "timeout",
        "sentinels",
        "service",
        "sentinel_password",
        "min_replicas",
        "replication_timeout",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "credentials",
        "admin_password_file",
    )

    def __init__(self) -> None:
        self.url = defaults.REDIS_URL
        self.unix_path = ""
        # Where a bare RedisSettings() points, and a redis:// URL without host or port;
        # load() always parses `url`, so a loaded config has the address it names.
        self.host = defaults.REDIS_HOST
        self.port = defaults.REDIS_PORT
        self.tls = False
        self.username = ""
        self.password = ""
        self.db = 0
        self.timeout = defaults.REDIS_TIMEOUT
        self.sentinels: tuple[tuple[str, int], ...] = ()
        self.service = defaults.SENTINEL_SERVICE
        self.sentinel_password = ""
        self.min_replicas: int | None = None  # None: "auto", one replica if any is online
        # The keys `password_file`, `sentinel_password_file` and `min_replicas_acknowledged`
        # have no attribute of their own: config.check.apply_redis and read_secrets turn them
        # into the ones above.
        self.replication_timeout = defaults.REPLICATION_TIMEOUT
        self.tls_ca_file = defaults.TLS_CA_FILE
        self.tls_cert_file = defaults.TLS_CERT_FILE
        self.tls_key_file = defaults.TLS_KEY_FILE
        self.credentials = defaults.STORE_CREDENTIALS
        self.admin_password_file = defaults.ADMIN_PASSWORD_FILE

    def own_store(self) -> bool:
        """Whether the store is the package's own pbs-store.service (url unset or the same)."""
        return self.url == defaults.REDIS_URL and not self.sentinels

    def component_users(self) -> bool:
        """Whether each component logs in as its own ACL user (see defaults.STORE_CREDENTIALS)."""
        if self.credentials == "auto":
            return self.own_store()
        return self.credentials == "component"


class AuthorizationSettings:
    """How long a login authorizes, and which login addresses never do."""

    __slots__ = ("lifetime", "ignore")

    def __init__(self) -> None:
        self.lifetime = defaults.LIFETIME
        self.ignore: tuple[str, ...] = defaults.IGNORE_NETWORKS

    def networks(self) -> list[IPv4Network | IPv6Network]:
        """`ignore` as networks, for the reader; a bad one is a ConfigError naming it.

        A loaded file's networks were checked when it was parsed
        (config.check.check_networks), so this only fails for a value set by
        hand. The handler never calls it.
        """
        return parse_networks(self.ignore)


class PolicySettings:
    """The handler's answers and limits."""

    __slots__ = (
        "authorized",
        "unauthorized",
        "unavailable",
        "idle_timeout",
        "max_line_length",
        "max_request_size",
        "login_wait",
    )

    def __init__(self) -> None:
        self.authorized = defaults.ACTION_AUTHORIZED
        self.unauthorized = defaults.ACTION_UNAUTHORIZED
        self.unavailable = defaults.ACTION_UNAVAILABLE
        self.idle_timeout = defaults.IDLE_TIMEOUT
        self.max_line_length = defaults.MAX_LINE_LENGTH
        self.max_request_size = defaults.MAX_REQUEST_SIZE
        self.login_wait = defaults.LOGIN_WAIT


class JournalSettings:
    """Which journal entries are logins: the servers, or units and formats, a site pattern."""

    __slots__ = ("servers", "units", "imap", "formats", "pattern", "directory")

    def __init__(self) -> None:
        self.servers: tuple[str, ...] = defaults.JOURNAL_SERVERS
        self.units: tuple[str, ...] = defaults.JOURNAL_UNITS
        self.imap = defaults.JOURNAL_IMAP
        self.formats: tuple[str, ...] = defaults.JOURNAL_FORMATS
        self.pattern = defaults.JOURNAL_PATTERN
        self.directory = defaults.JOURNAL_DIRECTORY

    def login_units(self) -> tuple[str, ...]:
        """The units whose entries can authorize: `units` if set (it wins), else the servers'."""
        if self.units:
            return self.units
        return tuple(dict.fromkeys(u for name in self.servers for u in defaults.SERVER_UNITS[name]))

    def login_formats(self) -> tuple[str, ...]:
        """The formats tried: `formats` if set (it wins), else the servers'; with `units`
        set and no `formats`, every format, as 0.2 had for a site naming Courier's units."""
        if self.formats:
            return self.formats
        return tuple(defaults.SERVER_UNITS) if self.units else self.servers


SECTIONS = ("redis", "authorization", "policy", "journal")
"""The file's tables, each an attribute of Config; config.table.TABLE has their keys."""


class Config:
    """The whole configuration; a missing file means every default."""

    __slots__ = ("path", "redis", "authorization", "policy", "journal")

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.redis = RedisSettings()
        self.authorization = AuthorizationSettings()
        self.policy = PolicySettings()
        self.journal = JournalSettings()


def parse_networks(texts: tuple[str, ...] | list[str]) -> list[IPv4Network | IPv6Network]:
    """Parse `[authorization] ignore`; a bad entry is a ConfigError naming it."""
    import ipaddress  # only when a file is parsed, and in the reader

    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"[authorization] ignore: not a network: {text!r}") from None
    return networks
