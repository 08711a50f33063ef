"""The configuration file: TOML, every key optional, checked once when it is read.

The policy handler reads this on every Postfix connection, so the module keeps to
plain classes and imports `tomllib` only when there is a file to parse.
"""

from __future__ import annotations

import os

from pbs_activated import defaults


class ConfigError(ValueError):
    """The configuration file cannot be read or holds a value we refuse."""


class RedisSettings:
    """Where the Redis server is and how to log in, parsed from `[redis] url`."""

    __slots__ = (
        "url", "unix_path", "host", "port", "tls", "username", "password", "db", "timeout",
        "sentinels", "service", "sentinel_password",
    )

    def __init__(self) -> None:
        self.url = defaults.REDIS_URL
        self.unix_path = ""
        self.host = "127.0.0.1"
        self.port = 6379
        self.tls = False
        self.username = ""
        self.password = ""
        self.db = 0
        self.timeout = defaults.REDIS_TIMEOUT
        self.sentinels: tuple[tuple[str, int], ...] = ()
        self.service = defaults.SENTINEL_SERVICE
        self.sentinel_password = ""


class AuthorizationSettings:
    """How long a login authorizes, and which login addresses never do."""

    __slots__ = ("lifetime", "ignore")

    def __init__(self) -> None:
        self.lifetime = defaults.LIFETIME
        self.ignore: tuple[str, ...] = defaults.IGNORE_NETWORKS


class PolicySettings:
    """The handler's answers and limits."""

    __slots__ = (
        "authorized", "unauthorized", "unavailable", "idle_timeout", "max_line_length",
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
    """Which journal entries are logins: units, formats, a site pattern."""

    __slots__ = ("units", "imap", "formats", "pattern", "directory")

    def __init__(self) -> None:
        self.units: tuple[str, ...] = defaults.JOURNAL_UNITS
        self.imap = defaults.JOURNAL_IMAP
        self.formats: tuple[str, ...] = defaults.JOURNAL_FORMATS
        self.pattern = defaults.JOURNAL_PATTERN
        self.directory = defaults.JOURNAL_DIRECTORY


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
    try:
        with open(path, "rb") as file:
            content = file.read()
    except FileNotFoundError:
        content = b""
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    tables: dict[str, object] = {}
    if content.strip():
        import tomllib

        try:
            tables = tomllib.loads(content.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: {error}") from None
    apply(config, tables)
    resolve_secrets(config.redis)
    return config


def apply(config: Config, tables: dict[str, object]) -> None:
    """Check the parsed TOML tables and set them on `config`; unknown keys are errors.

    An unknown key is almost always a typo (`lifetme = 60`) whose silent default
    would surprise the administrator, so it is refused with its name.
    """
    known = {"redis", "authorization", "policy", "journal"}
    for name in tables:
        if name not in known:
            raise ConfigError(f"{config.path}: unknown section [{name}]")
    redis = _section(tables, "redis", config.path)
    settings = config.redis
    if "url" in redis:
        settings.url = _string(redis, "url", "redis")
    parse_redis_url(settings.url, settings)
    if "timeout" in redis:
        settings.timeout = _number(redis, "timeout", "redis", 0.05, 60.0)
    if "password_file" in redis:
        path = _string(redis, "password_file", "redis")
        settings.password = read_secret(path) if path else settings.password
    if "sentinels" in redis:
        settings.sentinels = tuple(
            _host_port(item) for item in _strings(redis, "sentinels", "redis")
        )
    if "service" in redis:
        settings.service = _string(redis, "service", "redis")
    if "sentinel_password_file" in redis:
        path = _string(redis, "sentinel_password_file", "redis")
        settings.sentinel_password = read_secret(path) if path else ""
    _refuse_unknown(
        redis,
        "redis",
        ("url", "timeout", "password_file", "sentinels", "service", "sentinel_password_file"),
    )

    authorization = _section(tables, "authorization", config.path)
    if "lifetime" in authorization:
        config.authorization.lifetime = int(
            _number(authorization, "lifetime", "authorization", 1, 7 * 86400, integer=True)
        )
    if "ignore" in authorization:
        config.authorization.ignore = _strings(authorization, "ignore", "authorization")
    _refuse_unknown(authorization, "authorization", AuthorizationSettings.__slots__)

    policy = _section(tables, "policy", config.path)
    for key in ("authorized", "unauthorized", "unavailable"):
        if key in policy:
            setattr(config.policy, key, _action(policy, key))
    if "idle_timeout" in policy:
        config.policy.idle_timeout = _number(policy, "idle_timeout", "policy", 1, 86400)
    if "max_line_length" in policy:
        config.policy.max_line_length = int(
            _number(policy, "max_line_length", "policy", 256, 1 << 20, integer=True)
        )
    if "max_request_size" in policy:
        config.policy.max_request_size = int(
            _number(policy, "max_request_size", "policy", 1024, 1 << 24, integer=True)
        )
    _refuse_unknown(policy, "policy", PolicySettings.__slots__)

    journal = _section(tables, "journal", config.path)
    if "units" in journal:
        config.journal.units = _strings(journal, "units", "journal")
    if "imap" in journal:
        value = journal["imap"]
        if not isinstance(value, bool):
            raise ConfigError("[journal] imap must be true or false")
        config.journal.imap = value
    if "formats" in journal:
        config.journal.formats = _strings(journal, "formats", "journal")
        for name in config.journal.formats:
            if name not in ("dovecot", "courier"):
                raise ConfigError(f"[journal] formats: unknown format {name!r}")
    if "pattern" in journal:
        config.journal.pattern = _string(journal, "pattern", "journal")
    if "directory" in journal:
        config.journal.directory = _string(journal, "directory", "journal")
    _refuse_unknown(journal, "journal", JournalSettings.__slots__)


def parse_redis_url(url: str, settings: RedisSettings) -> None:
    """Fill `settings` from a Redis URL, the forms redis-py and redis-cli know.

    `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, and
    `unix://[[user]:password@]/path/to/socket[?db=N]`. Written by hand because
    `urllib.parse` costs the handler milliseconds of imports per connection.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"[redis] url must start with redis://, rediss:// or unix://: {url!r}")
    credentials, at, location = rest.rpartition("@")
    if at:
        user, colon, password = credentials.partition(":")
        settings.username = _unquote(user) if colon else ""
        settings.password = _unquote(password if colon else user)
    location, _, query = location.partition("?")
    db_text = ""
    for parameter in query.split("&") if query else ():
        name, _, value = parameter.partition("=")
        if name == "db":
            db_text = value
    settings.tls = scheme == "rediss"
    if scheme == "unix":
        if not location.startswith("/"):
            raise ConfigError(f"[redis] url: unix:// needs an absolute socket path: {url!r}")
        settings.unix_path = location
    else:
        hostport, _, path = location.partition("/")
        db_text = path or db_text
        settings.host, settings.port = _host_port(hostport or "127.0.0.1", default_port=6379)
    if db_text:
        if not db_text.isdigit():
            raise ConfigError(f"[redis] url: database must be a number: {url!r}")
        settings.db = int(db_text)


def read_secret(path: str) -> str:
    """Return the first line of a secret file (a password file or a systemd credential)."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as error:
        raise ConfigError(f"cannot read secret {path}: {error.strerror}") from None


def resolve_secrets(settings: RedisSettings) -> None:
    """Take passwords from systemd credentials when the config names no file.

    `LoadCredential=redis-password:/etc/...` in a unit puts the secret where only
    that service can read it, which beats a password in a world-readable file.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return
    for credential, attribute in (
        (defaults.REDIS_CREDENTIAL, "password"),
        (defaults.SENTINEL_CREDENTIAL, "sentinel_password"),
    ):
        path = os.path.join(directory, credential)
        if not getattr(settings, attribute) and os.path.exists(path):
            setattr(settings, attribute, read_secret(path))


def _unquote(text: str) -> str:
    """Decode %XX escapes, as URLs carry passwords with `@` or `:` in them."""
    if "%" not in text:
        return text
    parts = text.split("%")
    decoded = bytearray(parts[0].encode())
    for part in parts[1:]:
        try:
            decoded.append(int(part[:2], 16))
            decoded.extend(part[2:].encode())
        except ValueError:
            decoded.extend(b"%" + part.encode())
    return decoded.decode("utf-8", "replace")


def _host_port(text: str, default_port: int = 26379) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or a bare host."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host or (port_text and not port_text.isdigit()):
        raise ConfigError(f"[redis] not a host:port: {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ConfigError(f"[redis] port out of range: {text!r}")
    return host, port


def _section(tables: dict[str, object], name: str, path: str) -> dict[str, object]:
    value = tables.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value


def _string(table: dict[str, object], key: str, section: str) -> str:
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(f"[{section}] {key} must be a string")
    return value


def _strings(table: dict[str, object], key: str, section: str) -> tuple[str, ...]:
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"[{section}] {key} must be a list of strings")
    return tuple(value)


def _number(
    table: dict[str, object], key: str, section: str, low: float, high: float,
    integer: bool = False,
) -> float:
    value = table[key]
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ConfigError(f"[{section}] {key} must be a {'whole ' if integer else ''}number")
    if not low <= value <= high:
        raise ConfigError(f"[{section}] {key} must be between {low:g} and {high:g}")
    return float(value)


def _action(table: dict[str, object], key: str) -> str:
    """Check a configured answer: one non-empty line, and `OK` only where it is meant."""
    value = _string(table, key, "policy").strip()
    if not value or "\n" in value or "\r" in value:
        raise ConfigError(f"[policy] {key} must be one non-empty line")
    if key != "authorized" and value.split()[0].upper() in ("OK", "PERMIT"):
        raise ConfigError(f"[policy] {key} must never permit: {value!r}")
    return value


def _refuse_unknown(table: dict[str, object], section: str, known: tuple[str, ...]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"[{section}] unknown key {key!r}")
