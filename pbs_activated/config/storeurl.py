"""Where the store is: `[redis] url` and `host:port`, parsed into RedisSettings.

Parsed by hand, in the forms redis-py and redis-cli know, since `urllib.parse`
costs milliseconds of imports. Only a fresh parse of the file needs this
(config.check): a handler that finds the file's settings cached never imports
it. The secrets the settings name are config's.
"""

from __future__ import annotations

from pbs_activated.config import ConfigError, defaults

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
