"""A freshly parsed file, checked: table.TABLE applied, and the rules that tie keys together.

`checked` is what config.load.load caches (config.load.read_checked): the settings a
file means, as plain values. So this module, the table and the URL parser are
imported once per change of the file, never on a start that finds its parse
cached; the secrets the settings name are config's, read on every load.
"""

from __future__ import annotations

from pbs_activated.config import ConfigError, defaults, parse_networks
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.config.table import SET_BY_RULES, TABLE

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from pbs_activated.config import Config, RedisSettings

SECRET_FILES = ("password_file", "sentinel_password_file")
"""[redis] keys naming a secret file: kept by name in `checked`, read by config.load.load."""


def checked(config: Config, tables: dict[str, object]) -> dict[str, dict[str, object]]:
    """Apply `tables` to a fresh `config` and return its settings, section by section.

    Beside the sections, "secret files" holds the SECRET_FILES the file names
    (their contents are never cached). Every value is of marshal's types.
    """
    check_networks(tables)
    apply(config, tables)
    values: dict[str, dict[str, object]] = {}
    for name in TABLE:
        settings = getattr(config, name)
        values[name] = {slot: getattr(settings, slot) for slot in type(settings).__slots__}
    redis = tables.get("redis", {})
    assert isinstance(redis, dict)  # apply checked it
    values["secret files"] = {name: redis[name] for name in SECRET_FILES if name in redis}
    return values


def check_networks(tables: dict[str, object]) -> None:
    """`[authorization] ignore`, checked once per change of the file.

    It needs `ipaddress`, 3 ms of imports that the handler would otherwise pay
    on every connection for a value only the reader uses; checked here, a broken
    network is reported by every component that loads the file, and a file with
    one is never cached. Values of the wrong type are left to `apply`.
    """
    authorization = tables.get("authorization")
    if isinstance(authorization, dict):
        ignore = authorization.get("ignore")
        if isinstance(ignore, list) and all(isinstance(text, str) for text in ignore):
            parse_networks(ignore)


def apply(config: Config, tables: dict[str, object]) -> None:
    """Check the parsed TOML tables and set them on `config`; unknown keys are errors.

    An unknown key is almost always a typo (`lifetme = 60`) whose silent default
    would surprise the administrator, so it is refused with its name.
    """
    for name in tables:
        if name not in TABLE:
            raise ConfigError(f"{config.path}: unknown section [{name}]")
    apply_redis(_section(tables, "redis", config.path), config.redis)
    for name in tuple(TABLE)[1:]:
        _apply_keys(_section(tables, name, config.path), name, getattr(config, name))


def _apply_keys(table: dict[str, object], section: str, settings: object) -> None:
    """Check each key of one section against TABLE and set its attribute."""
    keys = TABLE[section]
    for name, value in table.items():
        key = keys.get(name)
        if key is None:
            raise ConfigError(f"[{section}] unknown key {name!r}")
        checked_value = key[0](value, section, name, key[2])
        if name not in SET_BY_RULES:
            setattr(settings, name, checked_value)


def apply_redis(redis: dict[str, object], settings: RedisSettings) -> None:
    """Check the `[redis]` table and set it on `settings` (the secret files are config's)."""
    _apply_keys(redis, "redis", settings)
    parse_redis_url(settings.url, settings)
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
        assert isinstance(count, int)  # the table's `replicas` checked it
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
