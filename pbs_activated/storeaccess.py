"""Where the store is and how a component logs in to it: `[redis] url` and the secrets.

The URL is parsed by hand, in the forms redis-py and redis-cli know, since
`urllib.parse` costs the policy handler milliseconds of imports on every
connection. Secrets come from files, the unit's systemd credentials or its
environment, and are read on every load, never cached (see
configfile.read_tables), so a rotated password or credential is seen at the
next start. One module for both: the handler needs both on every start, and
each module it imports costs it about 50 us.
"""

from __future__ import annotations

import os

from pbs_activated import defaults
from pbs_activated.configfile import ConfigError

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from pbs_activated.config import RedisSettings

URL_PARAMETERS = ("db",)
"""The query parameters we implement; any other is refused, as an unknown key is."""


def parse_redis_url(url: str, settings: RedisSettings) -> None:
    """Fill `settings` from a Redis URL.

    `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, and
    `unix://[[user]:password@]/path/to/socket[?db=N]`. The URL names one
    address: a TCP one clears a socket path set before. Credentials and the
    database are set only when the URL gives them, so a password read from a
    file before is kept.

    redis-py takes further query parameters (timeouts, pool sizes...); we take
    `db` alone and refuse the others by name, since one silently ignored would
    surprise the administrator as a misspelt key would.
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
    unknown = []
    for parameter in query.split("&") if query else ():
        name, _, value = parameter.partition("=")
        if name == "db":
            db_text = value
        elif parameter:  # `?db=1&` has an empty one: nothing said, nothing to refuse
            unknown.append(name)
    if unknown:
        # Named without the URL, which may hold a password.
        listed = ", ".join(repr(_unquote(name)) for name in unknown)
        raise ConfigError(
            f"[redis] url: unknown query parameter {listed} (only {', '.join(URL_PARAMETERS)})"
        )
    settings.tls = scheme == "rediss"
    if scheme == "unix":
        if not location.startswith("/"):
            raise ConfigError(f"[redis] url: unix:// needs an absolute socket path: {url!r}")
        settings.unix_path = location
    else:
        hostport, _, path = location.partition("/")
        db_text = path or db_text
        settings.unix_path = ""
        settings.host, settings.port = host_port(
            hostport or defaults.REDIS_HOST, default_port=defaults.REDIS_PORT
        )
    if db_text:
        if not db_text.isdigit():
            raise ConfigError(f"[redis] url: database must be a number: {url!r}")
        settings.db = int(db_text)


def host_port(text: str, default_port: int = defaults.SENTINEL_PORT) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or a bare host (which gets `default_port`)."""
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
