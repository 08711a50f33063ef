"""How a configuration file becomes a Config, with the secrets its settings name.

Which sections and keys exist, how each is checked and what it defaults to is
declared once, in config.table.TABLE; config.check applies it to a freshly parsed
file, with the rules that tie keys together (a URL parsed into an address,
replication bounded by the timeout). The file and the cache of its checked
settings are config.file's. The secrets the settings name are read here, on
every load, and never cached.

The policy handler loads this on every Postfix connection: on a start that
finds the file's settings cached, none of config.check, the table or the URL
parser is imported.
"""

from __future__ import annotations

import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)

from pbs_activated.config import defaults
from pbs_activated.config.file import ConfigError, read_checked
from pbs_activated.config.settings import SECTIONS, Config, RedisSettings


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
