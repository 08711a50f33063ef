"""How a configuration file becomes a Config: its bytes, their TOML checked (or a cache
of that), and the secrets its settings name.

Which sections and keys exist, how each is checked and what it defaults to is
declared once, in config.table.TABLE; config.check applies it to a freshly
parsed file, with the rules that tie keys together (a URL parsed into an
address, replication bounded by the timeout). The secrets the settings name are
read on every load, and never cached.

The policy handler loads the file on every Postfix connection, so this module
imports `tomllib` only when there is a file to parse, and even then only when
its checked parse is not cached (see `read_checked`): on such a start, none of
config.check, the table or the URL parser is imported either.
"""

from __future__ import annotations

import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)

from pbs_activated import __version__
from pbs_activated.config import SECTIONS, Config, ConfigError, RedisSettings, defaults

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


CACHE_FILE = "config.marshal"
"""The parsed file's name in the handler's cache directory (see `read_checked`)."""

CACHE_DIRECTORY_ENVIRONMENT = ("CACHE_DIRECTORY", "RUNTIME_DIRECTORY")
"""Where systemd tells a unit with CacheDirectory= or RuntimeDirectory= its directory."""

CACHE_FORMAT = "pbs-activated config cache 3"
"""Changes whenever what is cached changes meaning, so an old cache is never trusted.

2: a cached parse has passed the parse-time checks. 3: what is cached is the
checked settings (`read_checked`'s `check`), for one version of the package."""


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
    """What a freshly parsed file means (config.check: imported only for a fresh parse)."""
    from pbs_activated.config import check

    return check.checked(Config(path), tables)


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


def read_checked(path: str, check: Callable[[dict[str, object]], T]) -> T:
    """Return `check` of the file's TOML tables: cached from the last parse, or made now.

    Why a cache: the handler starts once per Postfix connection, and `tomllib`
    with what it imports (re, string, typing...) costs about 11 ms on this
    machine class, more than the rest of the handler's imports together, as soon
    as the file holds one uncommented key (every real site sets `url`). And
    checking the tables against config.table costs the modules that hold the
    table and the URL parser. So the file is parsed and checked once, and what
    `check` made of it (the settings, in marshal's types) is kept: a start costs
    one stat and one small read instead. `marshal` is built into the
    interpreter and already loaded, like the importer's .pyc files that use it.

    Why it is correct: the cache is keyed, as a .pyc is, on the file's identity
    and change times (path, inode, size, mtime and ctime in nanoseconds), taken
    *before* the file is read, so an edit racing a parse can only make the next
    start parse again, never keep an old parse; and on the package's version,
    since what `check` makes of a file is the code's to say. An editor
    replacing the file, a chmod, a touch or a `cp` all change the key. A file
    that fails `check` is never cached and keeps being reported. Secrets are not
    `check`'s: the caller reads them on every start, so a rotated password or
    credential is seen at once.

    Why there: the directory systemd gives the unit ($CACHE_DIRECTORY from
    CacheDirectory=, else $RUNTIME_DIRECTORY), private to the service's user,
    since the file may hold a password in its URL. Without one (a shell, the
    tests, a unit without the setting) nothing is cached and every start parses.
    Any trouble with the cache (unwritable, corrupt, foreign) falls back to
    parsing: the cache only ever saves time.
    """
    try:
        status = posix.stat(path)
    except FileNotFoundError:
        return check({})
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    key = (path, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns, __version__)
    cache = _cache_file()
    if cache:
        cached = _read_cache(cache, key)
        if cached is not None:
            return cached  # type: ignore[return-value]
    try:
        with open(path, "rb") as file:
            content = file.read()
    except FileNotFoundError:
        return check({})
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    checked = check(parse_tables(content, path))
    if cache:
        _write_cache(cache, key, checked)
    return checked


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
        directories = defaults.environment(variable)
        if directories:
            # systemd joins several directories with ':'; ours is the first.
            return f"{directories.split(':', 1)[0]}/{CACHE_FILE}"
    return ""


def _read_cache(cache: str, key: tuple[object, ...]) -> dict[str, object] | None:
    """Return what was cached if the cache was written for exactly `key`, else None."""
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


def _write_cache(cache: str, key: tuple[object, ...], checked: object) -> None:
    """Store a checked parse atomically: concurrent handlers each rename a whole file in place."""
    import marshal

    try:
        payload = marshal.dumps((CACHE_FORMAT, key, checked))  # type: ignore[arg-type]
    except ValueError:  # not in marshal's types: never cached
        return
    temporary = f"{cache}.{posix.getpid()}.tmp"
    try:
        descriptor = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[posix.write(descriptor, view) :]
        finally:
            posix.close(descriptor)
        posix.replace(temporary, cache)
    except OSError:
        try:  # noqa: SIM105 (contextlib.suppress would cost the handler its import)
            posix.unlink(temporary)
        except OSError:
            pass
