"""The configuration: its sections as settings objects, and how a file becomes a Config.

Which sections and keys exist, how each is checked and what it defaults to is
declared once, in configtable.TABLE; configcheck applies it to a freshly parsed
file, with the rules that tie keys together (a URL parsed into an address,
replication bounded by the timeout). The file and the cache of its checked
settings are configfile's. The secrets the settings name are read here, on
every load, and never cached.

The policy handler loads this on every Postfix connection: plain classes, and
on a start that finds the file's settings cached, none of configcheck, the
table or the URL parser.
"""

from __future__ import annotations

import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)

from pbs_activated import defaults
from pbs_activated.configfile import CACHE_FILE, ConfigError, read_checked

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
    "config_path",
    "load",
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
        # have no attribute of their own: configcheck.apply_redis and read_secrets turn them
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
        (configcheck.check_networks), so this only fails for a value set by
        hand. The handler never calls it.
        """
        from pbs_activated.configcheck import parse_networks  # the reader's, once

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
    return option or defaults.environment(defaults.CONFIG_ENVIRONMENT) or defaults.CONFIG_PATH


def load(path: str) -> Config:
    """Read and check the configuration file; a missing file means defaults."""
    config = Config(path)
    checked = read_checked(path, lambda tables: _check(path, tables))
    for section in SECTIONS:
        settings = getattr(config, section)
        for name, value in checked[section].items():
            setattr(settings, name, value)
    read_secrets(config.redis, checked["secret files"])
    return config


def _check(path: str, tables: dict[str, object]) -> dict[str, dict[str, object]]:
    """What a freshly parsed file means (configcheck: imported only for a fresh parse)."""
    from pbs_activated import configcheck

    return configcheck.checked(Config(path), tables)


def read_secrets(settings: RedisSettings, files: dict[str, object]) -> None:
    """Read the secrets the settings name, on every load: they are never cached.

    A `password_file` wins over a password in the URL, then the unit's own user
    and credentials have their say (`resolve_secrets`).
    """
    path = files.get("password_file")
    if path:
        settings.password = read_secret(str(path))
    path = files.get("sentinel_password_file")
    if path is not None:
        settings.sentinel_password = read_secret(str(path)) if path else ""
    resolve_secrets(settings)


def read_secret(path: str) -> str:
    """Return the first line of a secret file (a password file or a systemd credential)."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as error:
        raise ConfigError(f"cannot read secret {path}: {error.strerror}") from None


def resolve_secrets(settings: RedisSettings) -> None:
    """Take the user and passwords from the unit: its environment or systemd credentials.

    With component users, a unit names its ACL user, so one config file serves
    the handler, the reader and the CLI, each with its own rights, in one of
    two ways. A long-lived service gets credentials
    (`SetCredential=store-user:pbs-journal`,
    `LoadCredential=store-password:/etc/pbs-activated/secrets/pbs-journal`),
    which put a root-only secret where only that service can read it. The
    per-connection handler cannot afford them: systemd builds a credentials
    directory at every start, which made a storm of 200 new connections take
    99 s instead of 9 s (systemd 252). Its unit names the user and a secret
    file in its environment instead (`PBS_ACTIVATED_STORE_USER`,
    `PBS_ACTIVATED_STORE_PASSWORD_FILE`); that secret only lets one read, and
    only the services' group can read it.
    """
    directory = defaults.environment("CREDENTIALS_DIRECTORY") or ""
    if settings.component_users():
        _component_user(settings, directory)
    if not directory:
        return
    for credential, attribute in (
        (defaults.REDIS_CREDENTIAL, "password"),
        (defaults.SENTINEL_CREDENTIAL, "sentinel_password"),
    ):
        path = f"{directory}/{credential}"
        if not getattr(settings, attribute) and _exists(path):
            setattr(settings, attribute, read_secret(path))
    key_path = f"{directory}/{defaults.REDIS_TLS_KEY_CREDENTIAL}"
    if settings.tls_cert_file and not settings.tls_key_file and _exists(key_path):
        settings.tls_key_file = key_path  # ssl reads it by path: the credential's own file


def _component_user(settings: RedisSettings, directory: str) -> None:
    """The unit's own ACL user: from its credentials if it has them, else its environment."""
    user_path = f"{directory}/{defaults.STORE_USER_CREDENTIAL}" if directory else ""
    if user_path and _exists(user_path):
        settings.username = read_secret(user_path)
        password_path = f"{directory}/{defaults.STORE_PASSWORD_CREDENTIAL}"
        if _exists(password_path):
            settings.password = read_secret(password_path)
        return
    user = defaults.environment(defaults.STORE_USER_ENVIRONMENT)
    if user:
        settings.username = user
        password_file = defaults.environment(defaults.STORE_PASSWORD_FILE_ENVIRONMENT)
        if password_file:
            settings.password = read_secret(password_file)


def _exists(path: str) -> bool:
    """Whether `path` can be stat'ed: os.path.exists, without importing os."""
    try:
        posix.stat(path)
    except OSError:
        return False
    return True
