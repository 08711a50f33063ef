"""The units as packaged: hardened, and clean to systemd's own checks, on every release.

`systemd-analyze security --offline=true` scores a unit file without a running
manager (systemd 252 has it). `systemd-analyze verify --root=` checks the units
against a root holding the package's files and the release's systemd units, so the
ExecStart= binaries and the Documentation= man pages are those of the package.
Each check runs with Debian 12's systemd (252) and Debian 13's (257): the host's
own, and the other release's in its cached root (releasetools.py).

One complaint is accepted knowingly: pbs-policy.socket sets PollLimitIntervalSec=
and PollLimitBurst=, which systemd 255 brought, and systemd 252 warns that it does
not know them and ignores them. An arch:all package cannot ship a unit only to the
systemd that reads it, and a drop-in would be read and warned about the same way;
ignoring is right there, since 252 has no poll limit to raise. So the checks
expect exactly those warnings from a systemd older than the keys, and nothing from
one that knows them.
"""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import pytest
from debpackage import ALIASED_UNIT_DIRECTORY, UNIT_DIRECTORY, run
from releasetools import SHARED, Tools
from support import LAUNCHER, LAUNCHER_SOURCE, REPO

MAXIMUM_EXPOSURE = 2.0
"""The issue's bound: the handler needs little more than its socket and Redis."""

UNITS = tuple(
    Path(line.split()[0]).name
    for line in (REPO / "packaging/debian/pbs-activated.install").read_text().splitlines()
    if line.startswith("units/")
)
"""Every unit the package ships, as pbs-activated.install lists them: one added
there is checked here without a word more."""
SERVICES = tuple(unit for unit in UNITS if unit.endswith(".service"))
SOCKETS = ("pbs-policy.socket", "pbs-policy-server.socket")
"""Two ways to serve the one policy socket path: only one may listen."""

KEYS_SINCE = {"PollLimitIntervalSec": 255, "PollLimitBurst": 255}
"""Keys our units set that systemd learnt after Debian 12's 252, with the version."""

LISTENERS = 2
"""Descriptors pbs-policy.socket may listen on: its own and the TCP example's."""


@functools.cache
def systemd_version(tools: Tools) -> int:
    """The major version of `tools`' systemd, as systemd-analyze gives it."""
    result = tools.run(lambda _: ["systemd-analyze", "--version"])
    match = re.match(r"systemd (\d+) ", result.stdout)
    assert match, result.stdout + result.stderr
    return int(match.group(1))


def exposure(tools: Tools, unit_file: Path) -> float:
    result = tools.run(
        lambda seen: [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            str(seen / unit_file.name),
        ],
        unit_file.parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def settings(unit_file: Path) -> dict[str, str]:
    """A unit file's `Key=value` lines (the last one wins, as in systemd)."""
    lines = unit_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Za-z]+=", line))


def seconds(timespan: str) -> float:
    """A systemd time span of the simple forms the units use: `1s`, `500ms`, `2`."""
    match = re.fullmatch(r"(\d+)(ms|s|)", timespan)
    assert match, timespan
    return int(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def make_verify_root(unpacked: Path, tools: Tools, root: Path) -> Path:
    """The package's files, plus what its Depends and systemd put on a real system of
    the release: the merged /usr's /lib, /bin and /sbin, systemd's units (sysinit.target
    and friends) and programs (systemd-socket-proxyd). No unit starts python3 itself:
    verify checks the command a unit names, not its #! line."""
    shutil.copytree(unpacked, root, symlinks=True)
    for alias in ("bin", "sbin", "lib"):
        if not (root / alias).exists():
            (root / alias).symlink_to(f"usr/{alias}")
    copied: set[Path] = set()
    for directory in (Path(ALIASED_UNIT_DIRECTORY).parent, Path(UNIT_DIRECTORY).parent):
        source = (tools.root / directory).resolve()  # /lib is /usr/lib on a merged /usr
        if source.is_dir() and source.is_relative_to(tools.root) and source not in copied:
            copied.add(source)
            target = root / source.relative_to(tools.root)
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    return root


@pytest.fixture(scope="session")
def verify_root(unpacked: Path, tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make_verify_root for each release's systemd, shared by the checks that change nothing."""
    return make_verify_root(unpacked, tools, tmp_path_factory.mktemp(tools.release) / "root")


def verify(tools: Tools, root: Path, *units: str) -> tuple[int, list[str]]:
    """Exit status and complaint lines of `systemd-analyze verify` (warnings come with 0).

    Paths in the lines name units under /usr/lib: systemd 252 (built for a split /usr)
    looks in /lib/systemd/system first and names the file it found there, which on a
    merged /usr is the same file.
    """
    seen = root if tools.on_host else SHARED / root.name
    result = tools.run(
        lambda seen: [
            "env",
            f"MANPATH={seen / root.name}/usr/share/man",
            "systemd-analyze",
            "verify",
            f"--root={seen / root.name}",
            *units,
        ],
        root.parent,
    )
    complaints = (result.stdout + result.stderr).strip().splitlines()
    aliased, canonical = f"{seen}/{ALIASED_UNIT_DIRECTORY}/", f"{seen}/{UNIT_DIRECTORY}/"
    return result.returncode, [line.replace(aliased, canonical) for line in complaints]


def unknown_key_warnings(tools: Tools, root: Path) -> list[str]:
    """What `tools`' systemd says of our keys it predates, in the words of systemd 252,
    with the paths as verify(tools, root) shows them."""
    seen = root if tools.on_host else SHARED / root.name
    warnings = []
    for unit in UNITS:
        section = ""
        for number, line in enumerate((REPO / "units" / unit).read_text().splitlines(), 1):
            if header := re.fullmatch(r"\[(\w+)\]", line):
                section = header.group(1)
            key = line.split("=", 1)[0]
            if KEYS_SINCE.get(key, 0) > systemd_version(tools):
                warnings.append(
                    f"{seen}/{UNIT_DIRECTORY}/{unit}:{number}: "
                    f"Unknown key '{key}' in section [{section}], ignoring."
                )
    return warnings


def unexpected(tools: Tools, root: Path, complaints: list[str]) -> list[str]:
    """Complaints other than the warnings about keys this systemd predates."""
    return [line for line in complaints if line not in unknown_key_warnings(tools, root)]


@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure_is_at_most_two(unpacked: Path, tools: Tools, service: str) -> None:
    assert exposure(tools, unpacked / UNIT_DIRECTORY / service) <= MAXIMUM_EXPOSURE


@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure_check_is_from_the_source_units(tools: Tools, service: str) -> None:
    """The same bound on units/ directly, so a weakened unit fails before packaging."""
    assert exposure(tools, REPO / "units" / service) <= MAXIMUM_EXPOSURE


def test_the_policy_server_is_as_hardened_as_the_handler_it_replaces(
    unpacked: Path, tools: Tools
) -> None:
    directory = unpacked / UNIT_DIRECTORY
    server = exposure(tools, directory / "pbs-policy-server.service")
    assert server <= exposure(tools, directory / "pbs-policy@.service")


def test_exposure_of_an_unhardened_service_is_far_above_the_bound(
    tools: Tools, tmp_path: Path
) -> None:
    """The measure is real: the same service without its hardening scores high."""
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/pbs-activated journal\nDynamicUser=yes\n")
    assert exposure(tools, unit) > 2 * MAXIMUM_EXPOSURE


def test_units_ship_under_usr_lib_not_the_aliased_lib(deb: Path) -> None:
    """/lib is an alias of /usr/lib since the merged /usr: trixie's lintian rejects it."""
    listing = run(["dpkg-deb", "-c", str(deb)])
    paths = [line.split(None, 5)[5].removeprefix("./") for line in listing.stdout.splitlines()]
    assert {f"{UNIT_DIRECTORY}/{unit}" for unit in UNITS} <= set(paths)
    assert not [path for path in paths if path.startswith("lib/")]


@pytest.mark.parametrize("unit", [unit.replace("@.", "@0.") for unit in UNITS])
def test_unit_verifies_clean(verify_root: Path, tools: Tools, unit: str) -> None:
    """Clean, but for the warnings about keys this systemd predates (see the top)."""
    status, complaints = verify(tools, verify_root, unit)
    assert status == 0 and unexpected(tools, verify_root, complaints) == [], complaints


def test_systemd_warns_of_exactly_the_keys_it_predates(verify_root: Path, tools: Tools) -> None:
    """252 names PollLimitIntervalSec= and PollLimitBurst= and nothing else; 257 nothing."""
    expected = unknown_key_warnings(tools, verify_root)
    assert bool(expected) == (systemd_version(tools) < 255)
    status, complaints = verify(tools, verify_root, "pbs-policy.socket")
    assert status == 0 and complaints == expected


def test_trixies_systemd_reads_the_poll_limit_keys(
    unpacked: Path, trixie_tools: Tools, tmp_path: Path
) -> None:
    """257's silence above is understanding, not indifference: a bad value is reported."""
    root = make_verify_root(unpacked, trixie_tools, tmp_path / "root")
    socket = root / UNIT_DIRECTORY / "pbs-policy.socket"
    text = re.sub(r"^PollLimitBurst=.*$", "PollLimitBurst=many", socket.read_text(), flags=re.M)
    socket.write_text(text)
    _, complaints = verify(trixie_tools, root, "pbs-policy.socket")
    assert any("PollLimitBurst" in line and "many" in line for line in complaints), complaints


def test_the_poll_limit_lets_every_connection_in_at_once() -> None:
    """Within one poll interval, all of MaxConnections: a burst of new smtpd is never slowed."""
    socket = settings(REPO / "units/pbs-policy.socket")
    assert int(socket["PollLimitBurst"]) >= int(socket["MaxConnections"])


def test_a_flood_meets_the_poll_limit_before_the_trigger_limit() -> None:
    """The poll limit only pauses a descriptor; the trigger limit fails the socket, which
    stops every policy answer. A trigger interval spans at most two poll intervals of
    each descriptor (each limited on its own), so even a flood on every listener stays
    within the triggers allowed."""
    socket = settings(REPO / "units/pbs-policy.socket")
    interval = seconds(socket["PollLimitIntervalSec"])
    assert interval == seconds(socket["TriggerLimitIntervalSec"])
    most_polls = LISTENERS * 2 * int(socket["PollLimitBurst"])
    assert most_polls <= int(socket["TriggerLimitBurst"])


def test_the_tcp_example_is_the_only_other_listener() -> None:
    """LISTENERS above counts the unix socket and the example's one TCP listener."""
    text = (REPO / "docs/examples/pbs-policy-tcp.conf").read_text()
    own = (REPO / "units/pbs-policy.socket").read_text()
    listeners = re.findall(r"^Listen\w+=", own + text, re.MULTILINE)
    assert len(listeners) == LISTENERS


def test_both_policy_sockets_listen_on_the_same_path(unpacked: Path) -> None:
    """Postfix's check_policy_service stays the same whichever socket serves it."""
    listeners = [
        re.findall(r"^ListenStream=(.*)$", (unpacked / UNIT_DIRECTORY / socket).read_text(), re.M)
        for socket in SOCKETS
    ]
    assert listeners == [["/var/spool/postfix/private/pbs-policy"]] * len(SOCKETS)


@pytest.mark.parametrize("socket", SOCKETS)
def test_each_policy_socket_conflicts_with_the_other(unpacked: Path, socket: str) -> None:
    """Declared on both sides, so starting either one stops the other, whichever ran."""
    [other] = set(SOCKETS) - {socket}
    text = (unpacked / UNIT_DIRECTORY / socket).read_text()
    assert f"Conflicts={other}" in text.splitlines()


def test_a_switch_stops_one_policy_socket_before_starting_the_other(unpacked: Path) -> None:
    """Each removes its file when stopped (RemoveOnStop=): without an ordering between
    the two, the stop could come after the other's start and unlink its live socket.
    One After= orders both directions (stop jobs precede start jobs); two would loop."""
    orderings = {
        socket: settings(unpacked / UNIT_DIRECTORY / socket).get("After") for socket in SOCKETS
    }
    assert orderings == {
        "pbs-policy.socket": "pbs-policy-server.socket",
        "pbs-policy-server.socket": None,
    }


@pytest.mark.parametrize("socket", [*SOCKETS, "pbs-store-admin.socket"])
def test_a_stopped_socket_leaves_no_file_behind(unpacked: Path, socket: str) -> None:
    assert settings(unpacked / UNIT_DIRECTORY / socket)["RemoveOnStop"] == "yes"


@pytest.mark.parametrize("socket", SOCKETS)
def test_each_policy_socket_brings_the_path_unit_that_starts_it_late(
    unpacked: Path, socket: str
) -> None:
    """Pulled in by its socket and stopped with it: only the enabled socket is ever
    started, and a socket stopped by hand stays stopped."""
    path_unit = socket.replace(".socket", ".path")
    path = settings(unpacked / UNIT_DIRECTORY / path_unit)
    assert settings(unpacked / UNIT_DIRECTORY / socket)["Wants"] == path_unit
    assert (path["PartOf"], path["Unit"]) == (socket, socket)
    assert path["PathExists"] == "/var/spool/postfix/private"
    assert "[Install]" not in (unpacked / UNIT_DIRECTORY / path_unit).read_text()


@pytest.mark.parametrize("socket", SOCKETS)
def test_no_policy_socket_makes_postfixs_private_directory(unpacked: Path, socket: str) -> None:
    """systemd makes a listening socket's missing parents itself, owned by root."""
    condition = settings(unpacked / UNIT_DIRECTORY / socket)["ConditionPathIsDirectory"]
    assert condition == "/var/spool/postfix/private"


def test_the_store_runs_as_the_dynamic_user_named_after_its_unit(unpacked: Path) -> None:
    """No User=: adequate looks a named user up in the user database, and a dynamic
    one is not there (invalid-systemd-user-or-group). The name is pbs-store either way."""
    store = settings(unpacked / UNIT_DIRECTORY / "pbs-store.service")
    assert store["DynamicUser"] == "yes"
    assert "User" not in store
    assert store["Group"] == "pbs-activated"


def test_the_server_socket_passes_its_listener_to_one_service(unpacked: Path) -> None:
    lines = (unpacked / UNIT_DIRECTORY / "pbs-policy-server.socket").read_text().splitlines()
    assert "Accept=no" in lines


def test_verify_notices_a_missing_binary(verify_root: Path, tools: Tools, tmp_path: Path) -> None:
    """The check is real: without the package's command it fails."""
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    (root / "usr/bin/pbs-activated").unlink()
    (root / LAUNCHER.lstrip("/")).unlink()
    for unit in ("pbs-journal.service", "pbs-policy@0.service", "pbs-policy-server.service"):
        status, complaints = verify(tools, root, unit)
        assert status != 0 and any("is not executable" in line for line in complaints), complaints


@pytest.mark.parametrize(
    ("unit", "subcommand"),
    [("pbs-policy@.service", "policy"), ("pbs-policy-server.service", "policy-server")],
)
def test_each_policy_unit_starts_its_subcommand_through_the_launcher(
    unit: str, subcommand: str
) -> None:
    assert settings(REPO / "units" / unit)["ExecStart"] == f"{LAUNCHER} {subcommand}"


def test_the_launcher_ships_executable_and_unchanged_with_its_interpreter_options(
    unpacked: Path,
) -> None:
    """`python3 -IS` on its #! line: no site, no PYTHON* variables (docs/performance.md).
    Unchanged: dh_python3 rewrites some #! lines, and this one must keep its options."""
    launcher = unpacked / LAUNCHER.lstrip("/")
    assert launcher.stat().st_mode & 0o777 == 0o755
    assert launcher.read_bytes() == LAUNCHER_SOURCE.read_bytes()
    assert launcher.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"


def test_tcp_listener_example_verifies_clean(
    verify_root: Path, tools: Tools, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    drop_in = root / "etc/systemd/system/pbs-policy.socket.d/tcp.conf"
    drop_in.parent.mkdir(parents=True)
    shutil.copy(root / "usr/share/doc/pbs-activated/examples/pbs-policy-tcp.conf", drop_in)
    status, complaints = verify(tools, root, "pbs-policy.socket")
    assert status == 0 and unexpected(tools, root, complaints) == [], complaints


def test_tcp_listener_example_listens_on_loopback_only() -> None:
    text = (REPO / "docs/examples/pbs-policy-tcp.conf").read_text()
    listeners = re.findall(r"^ListenStream=(.*)$", text, re.MULTILINE)
    assert listeners and all(re.fullmatch(r"127\.0\.0\.1:\d+", item) for item in listeners)
    assert "IPAddressDeny=any" in text.splitlines()
    assert "IPAddressAllow=localhost" in text.splitlines()
