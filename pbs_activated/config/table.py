"""Every section and key of the configuration file, declared once, in `TABLE`.

Each key says how its value is checked, its default (from `defaults`), the
bounds or choices it allows, and what it means in one line. `config.check.apply`
checks a file against it, and the tests check the shipped conffile and
pbs-activated.toml(5) against it: a key added here without a line in both
fails them.

Plain dicts and tuples, no dataclasses, enum or even a class per key: the
policy handler imports this on every Postfix connection, and building 26
objects cost it 50 us more than 26 tuples.
"""

from __future__ import annotations

from pbs_activated.config import ConfigError, defaults
from pbs_activated.config.storeurl import host_port

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

    Check = Callable[[object, str, str, tuple[object, ...]], object]
    """Takes the file's value, the key's section and name, and its `allowed`;
    returns what the settings hold, or raises ConfigError."""


def string(value: object, section: str, name: str, allowed: tuple[object, ...]) -> str:
    """Any string: a path, a name, a URL or a pattern checked where it is used."""
    if not isinstance(value, str):
        raise ConfigError(f"[{section}] {name} must be a string")
    return value


def strings(value: object, section: str, name: str, allowed: tuple[object, ...]) -> tuple[str, ...]:
    """A list of strings, held as a tuple."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"[{section}] {name} must be a list of strings")
    return tuple(value)


def boolean(value: object, section: str, name: str, allowed: tuple[object, ...]) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"[{section}] {name} must be true or false")
    return value


def seconds(value: object, section: str, name: str, allowed: tuple[object, ...]) -> float:
    """A number, whole or not, within `allowed`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"[{section}] {name} must be a number")
    return float(_within(value, section, name, allowed))


def whole(value: object, section: str, name: str, allowed: tuple[object, ...]) -> int:
    """A whole number within `allowed`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"[{section}] {name} must be a whole number")
    return int(_within(value, section, name, allowed))


def _within(value: float, section: str, name: str, allowed: tuple[object, ...]) -> float:
    low, high = allowed
    assert isinstance(low, int | float) and isinstance(high, int | float)  # for mypy
    if not low <= value <= high:
        raise ConfigError(
            f"[{section}] {name} must be between {number_text(low)} and {number_text(high)}"
        )
    return value


def number_text(value: float) -> str:
    """A bound as the man page writes it: 604800, not 6.048e+05; 0.05, not 0.050000."""
    return str(int(value)) if value == int(value) else str(value)


def choice(value: object, section: str, name: str, allowed: tuple[object, ...]) -> str:
    """One of the words in `allowed`."""
    if not isinstance(value, str) or value not in allowed:
        words = [f'"{word}"' for word in allowed]
        raise ConfigError(f"[{section}] {name} must be {', '.join(words[:-1])} or {words[-1]}")
    return value


def choices(value: object, section: str, name: str, allowed: tuple[object, ...]) -> tuple[str, ...]:
    """A list of words from `allowed` (`formats = ["dovecot"]`)."""
    chosen = strings(value, section, name, allowed)
    for word in chosen:
        if word not in allowed:
            raise ConfigError(f"[{section}] {name}: unknown {name.removesuffix('s')} {word!r}")
    return chosen


def replicas(value: object, section: str, name: str, allowed: tuple[object, ...]) -> str | int:
    """ "auto", or a count within `allowed`."""
    low, high = allowed
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool):
        assert isinstance(low, int) and isinstance(high, int)  # for mypy
        if low <= value <= high:
            return value
    raise ConfigError(f'[{section}] {name} must be "auto" or {low} to {high}')


def addresses(
    value: object, section: str, name: str, allowed: tuple[object, ...]
) -> tuple[tuple[str, int], ...]:
    """A list of `host:port`, `[v6]:port` or bare hosts (which get Sentinel's port)."""
    return tuple(host_port(item) for item in strings(value, section, name, allowed))


def networks(
    value: object, section: str, name: str, allowed: tuple[object, ...]
) -> tuple[str, ...]:
    """A list of networks: only its type is checked here, every start.

    Whether each is a network needs `ipaddress` (3 ms); config checks that when
    the file is parsed, once per change (see `config.check.check_networks`).
    """
    return strings(value, section, name, allowed)


def action(value: object, section: str, name: str, allowed: tuple[object, ...]) -> str:
    """A Postfix access(5) action that never permits: one non-empty line."""
    answer = permitting_action(value, section, name, allowed)
    if answer.split()[0].upper() in ("OK", "PERMIT"):
        raise ConfigError(f"[{section}] {name} must never permit: {answer!r}")
    return answer


def permitting_action(value: object, section: str, name: str, allowed: tuple[object, ...]) -> str:
    """Any Postfix access(5) action, `OK` included: one non-empty line."""
    answer = string(value, section, name, allowed).strip()
    if not answer or "\n" in answer or "\r" in answer:
        raise ConfigError(f"[{section}] {name} must be one non-empty line")
    return answer


# fmt: off
TABLE: dict[str, dict[str, tuple[Check, object, tuple[object, ...], str]]] = {
    # section: {key: (check, default as the file writes it, bounds or choices, doc)}
    "redis": {
        "url": (string, defaults.REDIS_URL, (),
            "Where the store is: redis://, rediss:// (TLS) or unix://; unset, the package's own."),
        "credentials": (choice, defaults.STORE_CREDENTIALS, ("auto", "component", "url"),
            "Whose user and password each component logs in with."),
        "admin_password_file": (string, defaults.ADMIN_PASSWORD_FILE, (),
            "The pbs-admin user's secret, which the administration commands read."),
        "timeout": (seconds, defaults.REDIS_TIMEOUT, (0.05, 60),
            "Seconds one Redis operation may take, connecting included."),
        "password_file": (string, defaults.REDIS_PASSWORD_FILE, (),
            "A file whose first line is the Redis password."),
        "sentinels": (addresses, defaults.SENTINELS, (),
            "Redis Sentinels as host:port; empty, url names the server itself."),
        "service": (string, defaults.SENTINEL_SERVICE, (),
            "The master's name known to the Sentinels."),
        "sentinel_password_file": (string, defaults.SENTINEL_PASSWORD_FILE, (),
            "A file whose first line is the Sentinels' password."),
        "min_replicas_acknowledged": (replicas, defaults.MIN_REPLICAS_ACKNOWLEDGED, (0, 100),
            "Replicas that must confirm a login's write before the reader counts it as done."),
        "replication_timeout": (seconds, defaults.REPLICATION_TIMEOUT, (0.01, 60),
            "Seconds WAIT may block for the replicas; shorter than timeout."),
        "tls_ca_file": (string, defaults.TLS_CA_FILE, (),
            "The CA of the servers' certificates; empty, the system's."),
        "tls_cert_file": (string, defaults.TLS_CERT_FILE, (),
            "A client certificate, for servers with tls-auth-clients yes."),
        "tls_key_file": (string, defaults.TLS_KEY_FILE, (),
            "The client certificate's key; empty, the redis-tls-key credential or the cert file."),
    },
    "authorization": {
        "lifetime": (whole, defaults.LIFETIME, (1, 7 * 86400),
            "Seconds an address may relay after its login."),
        "ignore": (networks, defaults.IGNORE_NETWORKS, (),
            "Networks whose logins never authorize."),
    },
    "policy": {
        "authorized": (permitting_action, defaults.ACTION_AUTHORIZED, (),
            "The answer at RCPT for an address with a recent login."),
        "unauthorized": (action, defaults.ACTION_UNAUTHORIZED, (),
            "The answer at RCPT for any other address."),
        "unavailable": (action, defaults.ACTION_UNAVAILABLE, (),
            "The answer when the store or the configuration fails."),
        "idle_timeout": (seconds, defaults.IDLE_TIMEOUT, (1, 86400),
            "Seconds a handler waits for Postfix's next request."),
        "max_line_length": (whole, defaults.MAX_LINE_LENGTH, (256, 1 << 20),
            "Bytes in one name=value line."),
        "max_request_size": (whole, defaults.MAX_REQUEST_SIZE, (1024, 1 << 24),
            "Bytes in one request."),
        "login_wait": (seconds, defaults.LOGIN_WAIT, (0, 5),
            "Seconds a relay attempt may wait for a login on its way; 0, never."),
    },
    "journal": {
        "servers": (choices, defaults.JOURNAL_SERVERS, tuple(defaults.SERVER_UNITS),
            "The POP/IMAP servers whose logins count; they imply units and formats."),
        "units": (strings, defaults.JOURNAL_UNITS, (),
            "Override: units whose logins (trusted _SYSTEMD_UNIT) count; empty, the servers'."),
        "imap": (boolean, defaults.JOURNAL_IMAP, (),
            "Whether IMAP logins authorize as POP3 logins do."),
        "formats": (choices, defaults.JOURNAL_FORMATS, tuple(defaults.SERVER_UNITS),
            "Override: the login formats recognised; empty, the servers'."),
        "pattern": (string, defaults.JOURNAL_PATTERN, (),
            "A site regular expression with the groups user and address; empty, none."),
        "directory": (string, defaults.JOURNAL_DIRECTORY, (),
            "Read journal files from here instead of the system journal; empty, the system's."),
    },
}
# fmt: on
"""Each section is config.SECTIONS's, and each key the attribute of the same name
of that section's settings, but for SET_BY_RULES."""

SET_BY_RULES = ("password_file", "sentinel_password_file", "min_replicas_acknowledged")
"""[redis] keys with no attribute of their own: config.check.apply_redis turns them into
others (the secret files into passwords with config.load.read_secrets)."""
