"""The configuration: its sections as settings objects, and how a file becomes a Config.

Which sections and keys exist, how each is checked and what it defaults to is
declared once, in configtable.TABLE; `apply` is driven by it, and the rules
that tie keys together (a URL parsed into an address, a password file read,
replication bounded by the timeout) follow it here. The file is read by
configfile; the URL and the secrets by storeaccess.

The policy handler loads this on every Postfix connection: plain classes, and
nothing imported that the handler would not import anyway.
"""

from __future__ import annotations

import os

from pbs_activated import defaults
from pbs_activated.configfile import CACHE_FILE, ConfigError, read_tables
from pbs_activated.storeaccess import parse_redis_url, read_secret, resolve_secrets

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

__all__ = [
    "CACHE_FILE",
    "AuthorizationSettings",
    "Config",
    "ConfigError",
    "JournalSettings",
    "PolicySettings",
    "SECTIONS",
    "RedisSettings",
    "apply",
    "apply_redis",
    "config_path",
    "load",
    "parse_networks",
    "parse_redis_url",
    "read_secret",
    "resolve_secrets",
]


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
        # have no attribute of their own: apply_redis turns them into the ones above.
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

        A loaded file's networks were checked when it was parsed (`check_parsed`),
        so this only fails for a value set by hand. The handler never calls it.
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
    )

    def __init__(self) -> None:
        self.authorized = defaults.ACTION_AUTHORIZED
        self.unauthorized = defaults.ACTION_UNAUTHORIZED
        self.unavailable = defaults.ACTION_UNAVAILABLE
        self.idle_timeout = defaults.IDLE_TIMEOUT
        self.max_line_length = defaults.MAX_LINE_LENGTH
        self.max_request_size = defaults.MAX_REQUEST_SIZE


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
"""The file's tables, each an attribute of Config; configtable.TABLE has their keys."""


class Config:
    """The whole configuration; a missing file means every default."""

    __slots__ = ("path", "redis", "authorization", "policy", "journal")

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.redis = RedisSettings()
        self.authorization = AuthorizationSettings()
        self.policy = PolicySettings()
        self.journal = JournalSettings()


def config_path(option: str | None = None) -> str:
    """Return the file to read: the `--config` option, else $PBS_ACTIVATED_CONFIG, else Debian's."""
    return option or os.environ.get(defaults.CONFIG_ENVIRONMENT) or defaults.CONFIG_PATH


def load(path: str) -> Config:
    """Read and check the configuration file; a missing file means defaults."""
    config = Config(path)
    apply(config, read_tables(path, check_parsed))
    resolve_secrets(config.redis)
    return config


def check_parsed(tables: dict[str, object]) -> None:
    """The checks made once per change of the file, when it is parsed (configfile.read_tables).

    `[authorization] ignore` needs `ipaddress`, 3 ms of imports that the
    handler would otherwise pay on every connection for a value only the reader
    uses; checked here, a broken network is reported by every component that
    loads the file, and a file with one is never cached. Values of the wrong
    type are left to `apply`, which reports them on every load.
    """
    authorization = tables.get("authorization")
    if isinstance(authorization, dict):
        ignore = authorization.get("ignore")
        if isinstance(ignore, list) and all(isinstance(text, str) for text in ignore):
            parse_networks(ignore)


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


def apply(config: Config, tables: dict[str, object]) -> None:
    """Check the parsed TOML tables and set them on `config`; unknown keys are errors.

    An unknown key is almost always a typo (`lifetme = 60`) whose silent default
    would surprise the administrator, so it is refused with its name.
    """
    for name in tables:
        if name not in SECTIONS:
            raise ConfigError(f"{config.path}: unknown section [{name}]")
    apply_redis(_section(tables, "redis", config.path), config.redis)
    for name in SECTIONS[1:]:
        _apply_keys(_section(tables, name, config.path), name, getattr(config, name))


def _apply_keys(table: dict[str, object], section: str, settings: object) -> None:
    """Check each key of one section against configtable.TABLE and set its attribute."""
    if not table:  # the file as shipped has its sections' headers and no key
        return
    # Imported only for a file that sets a key: otherwise the handler saves its ~100 us.
    # (`import ... as` costs 0.2 us once loaded, `from ... import` three times that.)
    import pbs_activated.configtable as configtable

    keys = configtable.TABLE[section]
    for name, value in table.items():
        key = keys.get(name)
        if key is None:
            raise ConfigError(f"[{section}] unknown key {name!r}")
        checked = key[0](value, section, name, key[2])
        if name not in configtable.SET_BY_RULES:
            setattr(settings, name, checked)


def apply_redis(redis: dict[str, object], settings: RedisSettings) -> None:
    """Check the `[redis]` table and set it on `settings`."""
    _apply_keys(redis, "redis", settings)
    parse_redis_url(settings.url, settings)
    path = redis.get("password_file")
    if path:
        settings.password = read_secret(str(path))
    path = redis.get("sentinel_password_file")
    if path is not None:
        settings.sentinel_password = read_secret(str(path)) if path else ""
    apply_replication(redis, settings)
    if settings.tls_key_file and not settings.tls_cert_file:
        # A certificate without a key file is fine: the key may follow it in the same PEM.
        raise ConfigError("[redis] tls_key_file needs tls_cert_file")
    if settings.sentinels and settings.unix_path:
        if settings.url != defaults.REDIS_URL:
            raise ConfigError("[redis] sentinels hand out TCP addresses: url must not be unix://")
        parse_redis_url(defaults.SENTINEL_URL, settings)  # not the package's unix socket


def apply_replication(redis: dict[str, object], settings: RedisSettings) -> None:
    """Set how many replicas must confirm a write, and how long to wait for them.

    "auto" with Sentinels is one: Sentinels always mean replicas, and a replica
    in its first full sync is not online, so waiting only for the replicas the
    master reports online would acknowledge writes that no other server holds
    (25 of 43 grants were lost so at a failover). Without Sentinels, "auto" is
    left to the store (min_replicas None): one whenever one is online.
    """
    count = redis.get("min_replicas_acknowledged", defaults.MIN_REPLICAS_ACKNOWLEDGED)
    if count == "auto":
        settings.min_replicas = 1 if settings.sentinels else None
    else:
        assert isinstance(count, int)  # configtable.replicas checked it
        settings.min_replicas = count
    # WAIT blocks the connection: the socket must not time out before Redis answers.
    if "replication_timeout" in redis:
        if settings.replication_timeout >= settings.timeout:
            raise ConfigError("[redis] replication_timeout must be shorter than timeout")
    else:
        settings.replication_timeout = min(defaults.REPLICATION_TIMEOUT, settings.timeout / 2)


def _section(tables: dict[str, object], name: str, path: str) -> dict[str, object]:
    value = tables.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value
