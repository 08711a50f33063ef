"""When pbs-activated itself fails: local mail flows, nobody gains a relay, relaying recovers.

Issue #13's fault matrix. Each fault is caused in the product host, with Postfix
asking exactly the line pbs_activated.admin.postfix recommends, served by one socket
or the other (pbs-policy.socket, Accept=yes; pbs-policy-server.socket,
Accept=no). While it lasts, sessions come through an smtpd that already holds a
policy connection and, after `postfix reload`, through new ones. For each:

- mail for a local user (from a client that never logged in) gets 2xx;
- that stranger's relay attempt never gets 2xx;
- a client authorized before the fault gets 2xx or 4xx, never 5xx;
- once the fault is mended (no Postfix reload, no `systemctl reset-failed`), that
  client's relay gets 2xx again within RECOVERY seconds;
- logins made during a reader or journald fault are authorized once it is mended.

Every cell is recorded, and the table (fault x socket x release) is written to
build/fault-matrix.md whether or not a cell failed: the README's "When
pbs-activated fails" shows it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import pytest
from container import Container
from mailhost import USERS, pop3_login, smtp_try_patient, without_idle_smtpd
from product import (
    CONFIG,
    REPO,
    AddressPool,
    deb_path,
    use_policy_socket,
    wait_active,
    wait_authorized,
)

pytestmark = [pytest.mark.system, pytest.mark.deliberate_faults]

REMOTE = "someone@remote.test"
LOCAL = "bob@example.test"
HANDLER_SOCKET = "pbs-policy.socket"
SERVER_SOCKET = "pbs-policy-server.socket"
SERVER = "pbs-policy-server.service"
SOCKETS = {"accept-yes": HANDLER_SOCKET, "accept-no": SERVER_SOCKET}
STORE = "pbs-store.service"
READER = "pbs-journal.service"
JOURNALD = "systemd-journald.service"
PACKAGE = "/usr/lib/python3/dist-packages/pbs_activated"
BACKUP = "/root/test-faults-backup"
RECOVERY = 2.0
"""Seconds within which the authorized client relays again once a fault is mended."""
RECOVERY_LIMIT = 60.0
"""How long a test keeps trying before it calls a cell not recovered."""
CRASH_LOOP_SECONDS = 15.0
"""How long a crash loop lasts: longer than systemd's default start limit (5 in 10 s)."""
MATRIX = REPO / "build" / "fault-matrix.json"


@dataclass
class Cell:
    """One fault on one socket of one release: the worst answers seen, and the recovery."""

    release: str
    socket: str
    fault: str
    local: list[int] = field(default_factory=list)
    stranger: list[int] = field(default_factory=list)
    authorized: list[int] = field(default_factory=list)
    recovery: float = math.inf
    """Seconds from the mend to the authorized client's 2xx, less one healthy session
    (the test client's process start and its SMTP dialogue)."""
    raw_recovery: float = math.inf
    """Seconds from the mend to the end of the first session whose relay got 2xx."""
    logins_after_mend: str = ""
    socket_states: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Served:
    """The product host serving Postfix from one socket, with its clients."""

    ct: Container
    kind: str
    socket: str
    authorized: str
    stranger: str
    addresses: AddressPool
    session_seconds: float = 0.0
    """What one healthy SMTP session of the test client costs (process start included)."""


@pytest.fixture(scope="module", params=list(SOCKETS), ids=list(SOCKETS))
def served(
    request: pytest.FixtureRequest, product_host: Container, addresses: AddressPool
) -> Iterator[Served]:
    """The product host on one socket, an address authorized by a POP3 login, and a
    stranger that never logged in; back to the package's default socket after."""
    kind: str = request.param
    ct = product_host
    use_policy_socket(ct, SOCKETS[kind])
    authorized = addresses.v4()
    assert pop3_login(ct, authorized, "alice", USERS["alice"])["ok"]
    wait_authorized(ct, authorized)
    host = Served(ct, kind, SOCKETS[kind], authorized, addresses.v4(), addresses)
    started = time.monotonic()
    assert smtp_try_patient(ct, authorized, [REMOTE])[0][0] == 250
    host.session_seconds = time.monotonic() - started
    try:
        yield host
    finally:
        use_policy_socket(ct, HANDLER_SOCKET)


@pytest.fixture(scope="module")
def matrix() -> Iterator[dict[str, Cell]]:
    """The cells of this run, merged into build/fault-matrix.json (and .md) at the end."""
    cells: dict[str, Cell] = {}
    yield cells
    write_matrix(cells)


# --------------------------------------------------------------------------
# Faults: each a cause and a mend, run in the product host
# --------------------------------------------------------------------------


def pids_of_handlers(ct: Container) -> list[str]:
    """The running per-connection handlers (pbs-policy@ instances), by their command line."""
    found = ct.run(["pgrep", "-f", "pbs-activated/policy policy$"], check=False).stdout
    return found.split()


def main_pid(ct: Container, unit: str) -> str:
    return ct.systemctl("show", "-P", "MainPID", unit).stdout.strip()


def signal_pids(ct: Container, signal: str, pids: list[str]) -> None:
    if pids:
        ct.run(["kill", f"-{signal}", *pids], check=False)


def break_module(ct: Container, module: str, how: str) -> None:
    """Change an installed module of the package (a copy kept, its times with it)."""
    path = f"{PACKAGE}/{module}"
    ct.run(["cp", "-p", path, backup(module)])
    if how == "syntax":
        ct.run(["sh", "-c", f"printf '\\nthis is not python (\\n' >> {path}"])
    elif how == "raise-in-decide":
        script = (
            "s/^    examined = examine(request)$/"
            '    raise RuntimeError("injected by test_faults")\\n&/'
        )
        ct.run(["sed", "-i", script, path])
        assert "injected by test_faults" in ct.read_file(path)
    elif how == "exit-at-import":
        ct.run(
            ["sh", "-c", f"printf '\\nraise SystemExit(\"injected by test_faults\")\\n' >> {path}"]
        )


def mend_module(ct: Container, module: str) -> None:
    """The module as installed again, times included, so its byte-compiled file is valid."""
    ct.run(["cp", "-p", backup(module), f"{PACKAGE}/{module}"])


def backup(module: str) -> str:
    """Where break_module keeps the module as installed (`answer/__init__.py`: one file)."""
    return f"{BACKUP}-{module.replace('/', '-')}"


def restart_server_if(host: Served) -> None:
    """Accept=no: the running server imported the package before the fault; stop it
    (as its idle exit would) so that the next connection starts it on the broken files."""
    if host.kind == "accept-no":
        host.ct.systemctl("stop", SERVER, check=False)


@dataclass
class Fault:
    """How to cause one fault and how an administrator (or time) mends it."""

    cause: Callable[[Served], object]
    mend: Callable[[Served, object], None]
    hold: float = 0.0
    """Seconds the fault lasts after the first probes (while probes go on)."""
    login_during: bool = False


def _socket_stopped(host: Served) -> None:
    host.ct.systemctl("stop", host.socket)


def _socket_started(host: Served, _: object) -> None:
    host.ct.systemctl("start", host.socket)


def _import_error(host: Served) -> None:
    break_module(host.ct, "answer/__init__.py", "syntax")
    restart_server_if(host)


def _crash_on_request(host: Served) -> None:
    break_module(host.ct, "answer/decision.py", "raise-in-decide")
    restart_server_if(host)


def _crash_loop(host: Served) -> None:
    """The server exits at every start (handlers never import server.py)."""
    break_module(host.ct, "answer/server.py", "exit-at-import")
    restart_server_if(host)


def _hang_policy(host: Served) -> list[str]:
    ct = host.ct
    pids = pids_of_handlers(ct) if host.kind == "accept-yes" else [main_pid(ct, SERVER)]
    pids = [pid for pid in pids if pid != "0"]
    signal_pids(ct, "STOP", pids)
    return pids


def _continue(host: Served, pids: object) -> None:
    assert isinstance(pids, list)
    signal_pids(host.ct, "CONT", pids)


def _config_broken(host: Served) -> str:
    shipped = host.ct.read_file(CONFIG)
    host.ct.write_file(CONFIG, "[policy\nthis is = not toml\n")
    return shipped


def _config_mended(host: Served, shipped: object) -> None:
    assert isinstance(shipped, str)
    host.ct.write_file(CONFIG, shipped)


def _stop(unit: str) -> Callable[[Served], None]:
    def cause(host: Served) -> None:
        host.ct.systemctl("stop", unit)

    return cause


def _start(unit: str) -> Callable[[Served, object], None]:
    def mend(host: Served, _: object) -> None:
        host.ct.systemctl("start", unit)

    return mend


def _hang(unit: str) -> Callable[[Served], list[str]]:
    def cause(host: Served) -> list[str]:
        pids = [main_pid(host.ct, unit)]
        signal_pids(host.ct, "STOP", pids)
        return pids

    return cause


def _package_removed(host: Served) -> None:
    host.ct.run(
        ["apt-get", "remove", "-y", "pbs-activated"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )


def _package_installed(host: Served, _: object) -> None:
    host.ct.run(
        ["apt-get", "install", "-y", "--no-install-recommends", f"/root/{deb_path().name}"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )


FAULTS: dict[str, Fault] = {
    "socket stopped": Fault(_socket_stopped, _socket_started),
    "handler cannot start (import error)": Fault(
        _import_error, lambda host, _: mend_module(host.ct, "answer/__init__.py")
    ),
    "handler/server hung (SIGSTOP)": Fault(_hang_policy, _continue),
    "crash on a request": Fault(
        _crash_on_request, lambda host, _: mend_module(host.ct, "answer/decision.py")
    ),
    "server crash-looping": Fault(
        _crash_loop,
        lambda host, _: mend_module(host.ct, "answer/server.py"),
        hold=CRASH_LOOP_SECONDS,
    ),
    "config file broken": Fault(_config_broken, _config_mended),
    "store down": Fault(_stop(STORE), _start(STORE)),
    "store hung (SIGSTOP)": Fault(_hang(STORE), _continue),
    "journald hung (SIGSTOP)": Fault(_hang(JOURNALD), _continue, login_during=True),
    "reader stopped": Fault(_stop(READER), _start(READER), login_during=True),
    "package removed": Fault(_package_removed, _package_installed),
}
SMOKE = ("socket stopped", "crash on a request", "server crash-looping", "store down")
"""One of each kind: unreachable, broken on a request, systemd's limits, the store."""


# --------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------


def probe(host: Served, cell: Cell) -> None:
    """A local delivery and a relay attempt by the stranger, and a relay by the authorized."""
    local, relay = smtp_try_patient(host.ct, host.stranger, [LOCAL, REMOTE])
    [authorized] = smtp_try_patient(host.ct, host.authorized, [REMOTE])
    cell.local.append(local[0])
    cell.stranger.append(relay[0])
    cell.authorized.append(authorized[0])


def time_until_relayed(host: Served) -> float:
    """Seconds from now until a relay by the authorized client gets 2xx (inf: never)."""
    mended = time.monotonic()
    while time.monotonic() - mended < RECOVERY_LIMIT:
        [(code, _, _)] = smtp_try_patient(host.ct, host.authorized, [REMOTE])
        if 200 <= code < 300:
            return time.monotonic() - mended
        time.sleep(0.1)
    return math.inf


def socket_state(host: Served) -> str:
    ct = host.ct
    states = [
        f"{unit}={ct.systemctl('show', '-P', 'ActiveState', unit, check=False).stdout.strip()}"
        f"/{ct.systemctl('show', '-P', 'Result', unit, check=False).stdout.strip()}"
        for unit in (host.socket, *([SERVER] if host.kind == "accept-no" else []))
    ]
    return " ".join(states)


def smoke_or_not(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.smoke) if name in SMOKE else name


@pytest.mark.parametrize("fault", [smoke_or_not(name) for name in FAULTS])
def test_a_fault_costs_no_local_mail_gives_no_relay_and_recovers(
    served: Served, fault: str, matrix: dict[str, Cell]
) -> None:
    ct = served.ct
    cell = Cell(ct.target.release, served.kind, fault)
    matrix[f"{cell.release}|{cell.socket}|{cell.fault}"] = cell
    spec = FAULTS[fault]
    probe(served, Cell("", "", ""))  # an smtpd holding a policy connection, before the fault
    state = spec.cause(served)
    latecomer = ""
    try:
        probe(served, cell)  # through the smtpd that already has a policy connection
        with contextlib.suppress(TimeoutError):
            without_idle_smtpd(ct, timeout=30)
        probe(served, cell)  # through new ones
        if spec.login_during:
            latecomer = served.addresses.v4()
            assert pop3_login(ct, latecomer, "bob", USERS["bob"])["ok"]
        deadline = time.monotonic() + spec.hold
        while time.monotonic() < deadline:
            probe(served, cell)
        cell.socket_states.append(socket_state(served))
    finally:
        spec.mend(served, state)
    cell.raw_recovery = time_until_relayed(served)
    cell.recovery = max(0.0, cell.raw_recovery - served.session_seconds)
    cell.socket_states.append(socket_state(served))
    if latecomer:
        try:
            wait_authorized(ct, latecomer, timeout=30)
            [(code, _, _)] = smtp_try_patient(ct, latecomer, [REMOTE])
            cell.logins_after_mend = str(code)
        except TimeoutError:
            cell.logins_after_mend = "lost"
    restore(served)

    assert all(200 <= code < 300 for code in cell.local), cell
    assert not any(200 <= code < 300 for code in cell.stranger), cell
    assert all(code < 500 for code in cell.authorized), cell
    assert cell.recovery <= RECOVERY, cell
    if latecomer:
        assert cell.logins_after_mend == "250", cell


def restore(host: Served) -> None:
    """Whatever the mend left behind, back to the module's state for the next fault.

    Counted after the recovery time, so it never hides a fault that needed an
    administrator: the cell's socket states say what was found.
    """
    ct = host.ct
    wait_active(ct, STORE, READER, JOURNALD, timeout=30)
    if ct.systemctl("is-active", host.socket, check=False).stdout.strip() != "active":
        use_policy_socket(ct, host.socket)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def write_matrix(cells: dict[str, Cell]) -> None:
    """Merge this run's cells into build/fault-matrix.json and render build/fault-matrix.md."""
    MATRIX.parent.mkdir(exist_ok=True)
    known: dict[str, dict[str, object]] = {}
    if MATRIX.exists():
        with contextlib.suppress(ValueError):
            known = json.loads(MATRIX.read_text())
    known.update({key: asdict(cell) for key, cell in cells.items()})
    MATRIX.write_text(json.dumps(known, indent=1, default=str) + "\n")
    table = render(known)
    MATRIX.with_suffix(".md").write_text(table)
    print("\n" + table)


def codes(values: object) -> str:
    assert isinstance(values, list)
    return "/".join(str(code) for code in sorted(set(values))) or "-"


def render(known: dict[str, dict[str, object]]) -> str:
    lines = [
        "| fault | socket | release | local | stranger | authorized | 2xx again after (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {name: index for index, name in enumerate(FAULTS)}
    for row in sorted(
        known.values(),
        key=lambda row: (order.get(str(row["fault"]), 99), str(row["socket"]), str(row["release"])),
    ):
        recovery = float(str(row["raw_recovery"]))
        shown = "never" if math.isinf(recovery) else f"{recovery:.2f}"
        if row.get("logins_after_mend"):
            shown += f"; login during: {row['logins_after_mend']}"
        lines.append(
            f"| {row['fault']} | {row['socket']} | {row['release']} | {codes(row['local'])}"
            f" | {codes(row['stranger'])} | {codes(row['authorized'])} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def test_matrix_is_renderable() -> None:
    """The table renders from a cell as the tests record it (no container needed)."""
    cell = Cell("bookworm", "accept-yes", "store down", [250], [450], [450], 0.1, 0.4)
    assert "| store down | accept-yes | bookworm | 250 | 450 | 450 | 0.40 |" in render(
        {"k": asdict(cell)}
    )
