"""doctor's systemd checks: a policy socket enabled and listening, the reader and store running.

From `systemctl show`: a socket that hit its trigger limit, or whose service
hit its start limit, stops listening (`Result=trigger-limit-hit`,
`service-start-limit-hit`) and every relay attempt is deferred until someone
notices; the reader's STATUS line says whether it is following the journal or
waiting for the store.
"""

from __future__ import annotations

from collections.abc import Iterator

from pbs_activated.admin.doctor.findings import ERROR, OK, UNKNOWN, WARNING, Finding, Host
from pbs_activated.config import Config, defaults

POLICY_SOCKETS = ("pbs-policy.socket", "pbs-policy-server.socket")
READER = "pbs-journal.service"
STORE = "pbs-store.service"
PROPERTIES = "Id,LoadState,ActiveState,SubState,UnitFileState,Result,Listen,StatusText"


def units(host: Host, *names: str) -> dict[str, dict[str, str]]:
    """`systemctl show` of each unit as {unit: {property: value}}; {} without systemctl."""
    status, output = host.run(["systemctl", "show", "-p", PROPERTIES, "--", *names])
    if status != 0:
        return {}
    shown: dict[str, dict[str, str]] = {}
    for block in output.split("\n\n"):
        properties: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition("=")
            if name == "Listen":  # one line per address
                value = f"{properties['Listen']}\n{value}" if "Listen" in properties else value
            properties[name] = value
        if "Id" in properties:
            shown[properties["Id"]] = properties
    return shown


def listens(properties: dict[str, str]) -> set[str]:
    """The paths and host:port a socket unit listens on (`Listen=PATH (Stream)` lines)."""
    return {line.rsplit(" (", 1)[0] for line in properties.get("Listen", "").splitlines() if line}


def policy_listeners(host: Host) -> set[str]:
    """What the enabled policy sockets listen on: the places Postfix may name."""
    return {
        address
        for properties in units(host, *POLICY_SOCKETS).values()
        if properties.get("UnitFileState") in ("enabled", "enabled-runtime", "static")
        for address in listens(properties)
    }


def check(config: Config, host: Host) -> Iterator[Finding]:
    """The policy socket, the reader and, when it is the package's own, the store."""
    shown = units(host, *POLICY_SOCKETS, READER, STORE)
    if not shown:
        yield Finding("systemd", UNKNOWN, "systemctl show failed: is this host run by systemd?")
        return
    yield _policy_socket(shown)
    reader = shown.get(READER, {})
    status = reader.get("StatusText", "")
    if reader.get("ActiveState") != "active":
        yield Finding(
            "systemd.reader",
            ERROR,
            f"{READER} is {reader.get('ActiveState', 'unknown')}"
            f" ({reader.get('Result', '')}): no login is taken",
            f"systemctl enable --now {READER}; journalctl -u {READER} says why it stopped",
        )
    elif not status.startswith("Following the journal"):
        yield Finding(
            "systemd.reader",
            WARNING,
            f"{READER} is active but says: {status or 'nothing'}",
            "see doctor's store findings and journalctl -u pbs-journal",
        )
    else:
        yield Finding("systemd.reader", OK, f"{READER}: {status}")
    if config.redis.url == defaults.REDIS_URL and not config.redis.sentinels:
        store = shown.get(STORE, {})
        if store.get("ActiveState") != "active":
            yield Finding(
                "systemd.store",
                ERROR,
                f"{STORE} is {store.get('ActiveState', 'unknown')}: every relay attempt"
                " is deferred and no login is stored",
                f"systemctl start {STORE}; journalctl -u {STORE} says why it stopped",
            )
        else:
            yield Finding("systemd.store", OK, f"{STORE} is active")


def _policy_socket(shown: dict[str, dict[str, str]]) -> Finding:
    enabled = [
        name
        for name in POLICY_SOCKETS
        if shown.get(name, {}).get("UnitFileState") in ("enabled", "enabled-runtime")
    ]
    if not enabled:
        return Finding(
            "systemd.socket",
            ERROR,
            "neither pbs-policy.socket nor pbs-policy-server.socket is enabled:"
            " Postfix defers every relay attempt",
            "systemctl enable --now pbs-policy.socket",
        )
    if len(enabled) > 1:
        return Finding(
            "systemd.socket",
            WARNING,
            "both policy sockets are enabled; they conflict and only one listens",
            "systemctl disable --now pbs-policy-server.socket (or the other)",
        )
    name = enabled[0]
    socket = shown[name]
    if socket.get("ActiveState") != "active" or socket.get("Result") != "success":
        return Finding(
            "systemd.socket",
            ERROR,
            f"{name} is {socket.get('ActiveState')} ({socket.get('SubState')},"
            f" {socket.get('Result')}): Postfix defers every relay attempt",
            f"systemctl restart {name}; journalctl -u {name} says why it stopped",
        )
    where = ", ".join(sorted(listens(socket)))
    return Finding("systemd.socket", OK, f"{name} is enabled and listening on {where}")
