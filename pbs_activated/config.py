"""The configuration file: TOML, every key optional, checked once when it is read.

The policy handler reads this on every Postfix connection, so the module keeps to
plain classes and imports `tomllib` only when there is a file to parse, and even
then only when its parse is not cached (see `read_tables`).
"""

from __future__ import annotations

import os

from pbs_activated import defaults


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
        self.min_replicas: int | None = None  # None: "auto", one replica if any is online
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
    apply(config, read_tables(path))
    resolve_secrets(config.redis)
    return config


CACHE_FILE = "config.marshal"
"""The parsed file's name in the handler's cache directory (see `read_tables`)."""

CACHE_DIRECTORY_ENVIRONMENT = ("CACHE_DIRECTORY", "RUNTIME_DIRECTORY")
"""Where systemd tells a unit with CacheDirectory= or RuntimeDirectory= its directory."""

CACHE_FORMAT = "pbs-activated config cache 1"
"""Changes whenever what is cached changes meaning, so an old cache is never trusted."""


def read_tables(path: str) -> dict[str, object]:
    """Return the file's TOML tables, parsed or from the cache of the last parse.

    Why a cache: the handler starts once per Postfix connection, and `tomllib`
    with what it imports (re, string, typing...) costs about 11 ms on this
    machine class, more than the rest of the handler's imports together, as soon
    as the file holds one uncommented key (every real site sets `url`). Parsing
    it once and keeping the result in marshal's format costs one stat and one
    small read per connection instead; `marshal` is built into the interpreter
    and already loaded, like the importer's .pyc files that use it.

    Why it is correct: the cache is keyed, as a .pyc is, on the file's identity
    and change times (path, inode, size, mtime and ctime in nanoseconds), taken
    *before* the file is read, so an edit racing a parse can only make the next
    start parse again, never keep an old parse. An editor replacing the file, a
    chmod, a touch or a `cp` all change the key. Only the parsed tables are
    cached: `apply` still checks every value on every start and secrets are read
    from their files each time, so a rotated password or credential is seen at
    once. A broken file is never cached and keeps being reported.

    Why there: the directory systemd gives the unit ($CACHE_DIRECTORY from
    CacheDirectory=, else $RUNTIME_DIRECTORY), private to the service's user,
    since the file may hold a password in its URL. Without one (a shell, the
    tests, a unit without the setting) nothing is cached and every start parses.
    Any trouble with the cache (unwritable, corrupt, foreign) falls back to
    parsing: the cache only ever saves time.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    key = (path, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
    cache = _cache_file()
    if cache:
        cached = _read_cache(cache, key)
        if cached is not None:
            return cached
    try:
        with open(path, "rb") as file:
            content = file.read()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    tables = parse_tables(content, path)
    if cache:
        _write_cache(cache, key, tables)
    return tables


def parse_tables(content: bytes, path: str) -> dict[str, object]:
    """Parse the file's bytes as TOML; a file of comments alone is an empty document."""
    if not content.strip():
        return {}
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    if _only_comments(text):
        return {}
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None


def _only_comments(text: str) -> bool:
    """Tell whether every line is blank or a comment, in plain printable ASCII.

    Debian ships the file with every key commented out; recognising that costs
    microseconds where `tomllib` costs milliseconds. Anything less plain (a tab,
    a CR alone, a control or non-ASCII character) is left to `tomllib`, which
    then accepts or refuses it exactly as before.
    """
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not (line.isascii() and line.isprintable()):
            return False
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#"):
            return False
    return True


def _cache_file() -> str:
    """Return the cache file's path, or '' when systemd gave the unit no directory."""
    for variable in CACHE_DIRECTORY_ENVIRONMENT:
        directories = os.environ.get(variable)
        if directories:
            # systemd joins several directories with ':'; ours is the first.
            return os.path.join(directories.split(":", 1)[0], CACHE_FILE)
    return ""


def _read_cache(cache: str, key: tuple[object, ...]) -> dict[str, object] | None:
    """Return the cached tables if the cache was written for exactly `key`, else None."""
    import marshal  # built in and already loaded by the importer: costs nothing

    try:
        with open(cache, "rb") as file:
            entry = marshal.loads(file.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if (
        isinstance(entry, tuple)
        and len(entry) == 3
        and entry[0] == CACHE_FORMAT
        and entry[1] == key
        and isinstance(entry[2], dict)
    ):
        return entry[2]
    return None


def _write_cache(cache: str, key: tuple[object, ...], tables: dict[str, object]) -> None:
    """Store a parse, atomically: concurrent handlers each rename a whole file into place."""
    import marshal

    try:
        # TOML's values are marshal's types, but for dates and times: those raise.
        payload = marshal.dumps((CACHE_FORMAT, key, tables))  # type: ignore[arg-type]
    except ValueError:  # a TOML date or time: not marshalable, so never cached
        return
    temporary = f"{cache}.{os.getpid()}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)
        os.replace(temporary, cache)
    except OSError:
        try:  # noqa: SIM105 (contextlib.suppress would cost the handler its import)
            os.unlink(temporary)
        except OSError:
            pass


def apply(config: Config, tables: dict[str, object]) -> None:
    """Check the parsed TOML tables and set them on `config`; unknown keys are errors.

    An unknown key is almost always a typo (`lifetme = 60`) whose silent default
    would surprise the administrator, so it is refused with its name.
    """
    known = {"redis", "authorization", "policy", "journal"}
    for name in tables:
        if name not in known:
            raise ConfigError(f"{config.path}: unknown section [{name}]")
    apply_redis(_section(tables, "redis", config.path), config.redis)

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


def apply_redis(redis: dict[str, object], settings: RedisSettings) -> None:
    """Check the `[redis]` table and set it on `settings`."""
    if "url" in redis:
        settings.url = _string(redis, "url", "redis")
    parse_redis_url(settings.url, settings)
    if "credentials" in redis:
        settings.credentials = _string(redis, "credentials", "redis")
        if settings.credentials not in ("auto", "component", "url"):
            raise ConfigError('[redis] credentials must be "auto", "component" or "url"')
    if "admin_password_file" in redis:
        settings.admin_password_file = _string(redis, "admin_password_file", "redis")
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
    apply_replication(redis, settings)
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if key in redis:
            setattr(settings, key, _string(redis, key, "redis"))
    if settings.tls_key_file and not settings.tls_cert_file:
        # A certificate without a key file is fine: the key may follow it in the same PEM.
        raise ConfigError("[redis] tls_key_file needs tls_cert_file")
    if settings.sentinels and settings.unix_path:
        if settings.url != defaults.REDIS_URL:
            raise ConfigError("[redis] sentinels hand out TCP addresses: url must not be unix://")
        parse_redis_url(defaults.SENTINEL_URL, settings)  # not the package's unix socket
    _refuse_unknown(redis, "redis", REDIS_KEYS)


REDIS_KEYS = (
    "url",
    "timeout",
    "password_file",
    "sentinels",
    "service",
    "sentinel_password_file",
    "min_replicas_acknowledged",
    "replication_timeout",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "credentials",
    "admin_password_file",
)


def apply_replication(redis: dict[str, object], settings: RedisSettings) -> None:
    """Check how many replicas must confirm a write, and how long to wait for them.

    "auto" with Sentinels is one: Sentinels always mean replicas, and a replica
    in its first full sync is not online, so waiting only for the replicas the
    master reports online would acknowledge writes that no other server holds
    (25 of 43 grants were lost so at a failover). Without Sentinels, "auto" is
    left to the store (min_replicas None): one whenever one is online.
    """
    value = redis.get("min_replicas_acknowledged", "auto")
    if value == "auto":
        settings.min_replicas = 1 if settings.sentinels else None
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        settings.min_replicas = value
    else:
        raise ConfigError('[redis] min_replicas_acknowledged must be "auto" or 0 to 100')
    # WAIT blocks the connection: the socket must not time out before Redis answers.
    if "replication_timeout" in redis:
        settings.replication_timeout = _number(redis, "replication_timeout", "redis", 0.01, 60.0)
        if settings.replication_timeout >= settings.timeout:
            raise ConfigError("[redis] replication_timeout must be shorter than timeout")
    else:
        settings.replication_timeout = min(defaults.REPLICATION_TIMEOUT, settings.timeout / 2)


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
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if settings.component_users():
        _component_user(settings, directory)
    if not directory:
        return
    for credential, attribute in (
        (defaults.REDIS_CREDENTIAL, "password"),
        (defaults.SENTINEL_CREDENTIAL, "sentinel_password"),
    ):
        path = os.path.join(directory, credential)
        if not getattr(settings, attribute) and os.path.exists(path):
            setattr(settings, attribute, read_secret(path))
    key_path = os.path.join(directory, defaults.REDIS_TLS_KEY_CREDENTIAL)
    if settings.tls_cert_file and not settings.tls_key_file and os.path.exists(key_path):
        settings.tls_key_file = key_path  # ssl reads it by path: the credential's own file


def _component_user(settings: RedisSettings, directory: str) -> None:
    """The unit's own ACL user: from its credentials if it has them, else its environment."""
    user_path = os.path.join(directory, defaults.STORE_USER_CREDENTIAL) if directory else ""
    if user_path and os.path.exists(user_path):
        settings.username = read_secret(user_path)
        password_path = os.path.join(directory, defaults.STORE_PASSWORD_CREDENTIAL)
        if os.path.exists(password_path):
            settings.password = read_secret(password_path)
        return
    user = os.environ.get(defaults.STORE_USER_ENVIRONMENT)
    if user:
        settings.username = user
        password_file = os.environ.get(defaults.STORE_PASSWORD_FILE_ENVIRONMENT)
        if password_file:
            settings.password = read_secret(password_file)


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
    table: dict[str, object],
    key: str,
    section: str,
    low: float,
    high: float,
    integer: bool = False,
) -> float:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(f"[{section}] {key} must be a {'whole ' if integer else ''}number")
    assert isinstance(value, int | float)  # for mypy: the test above is too dynamic for it
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
