"""The units as packaged: hardened, and clean to systemd's own checks.

`systemd-analyze security --offline=true` scores a unit file without a running
manager (systemd 252 has it). `systemd-analyze verify --root=` checks the units
against a root holding the package's files and the host's systemd units, so the
ExecStart= binaries and the Documentation= man pages are those of the package.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from debpackage import UNIT_DIRECTORY, run
from support import PYTHON, REPO

MAXIMUM_EXPOSURE = 2.0
"""The issue's bound: the handler needs little more than its socket and Redis."""

SERVICES = ("pbs-policy@.service", "pbs-policy-server.service", "pbs-journal.service")
SOCKETS = ("pbs-policy.socket", "pbs-policy-server.socket")
"""Two ways to serve the one policy socket path: only one may listen."""
UNITS = ("pbs-policy.socket", "pbs-policy@.service", *SOCKETS[1:], *SERVICES[1:])


def exposure(unit_file: Path) -> float:
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)])
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.fixture(scope="session")
def verify_root(unpacked: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files, plus what its Depends and systemd put on a real system.

    That is the host's systemd units (sysinit.target and friends) and Debian's
    python3 (a unit may start the interpreter directly, skipping the console script).
    """
    root = tmp_path_factory.mktemp("verify-root")
    shutil.copytree(unpacked, root, symlinks=True, dirs_exist_ok=True)
    for directory in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if Path(directory).is_dir() and not Path(directory).is_symlink():
            shutil.copytree(
                directory, root / directory.lstrip("/"), symlinks=True, dirs_exist_ok=True
            )
    shutil.copy2(PYTHON, root / PYTHON.lstrip("/"))
    return root


def verify(root: Path, *units: str) -> tuple[int, str]:
    """Exit status and complaints of `systemd-analyze verify` (warnings come with status 0)."""
    result = run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        MANPATH=str(root / "usr/share/man"),
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure_is_at_most_two(unpacked: Path, service: str) -> None:
    assert exposure(unpacked / UNIT_DIRECTORY / service) <= MAXIMUM_EXPOSURE


@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure_check_is_from_the_source_units(service: str) -> None:
    """The same bound on units/ directly, so a weakened unit fails before packaging."""
    assert exposure(REPO / "units" / service) <= MAXIMUM_EXPOSURE


def test_the_policy_server_is_as_hardened_as_the_handler_it_replaces(unpacked: Path) -> None:
    directory = unpacked / UNIT_DIRECTORY
    server = exposure(directory / "pbs-policy-server.service")
    assert server <= exposure(directory / "pbs-policy@.service")


def test_exposure_of_an_unhardened_service_is_far_above_the_bound(tmp_path: Path) -> None:
    """The measure is real: the same service without its hardening scores high."""
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/pbs-activated journal\nDynamicUser=yes\n")
    assert exposure(unit) > 2 * MAXIMUM_EXPOSURE


def test_units_ship_under_usr_lib_not_the_aliased_lib(deb: Path) -> None:
    """/lib is an alias of /usr/lib since the merged /usr: trixie's lintian rejects it."""
    listing = run(["dpkg-deb", "-c", str(deb)])
    paths = [line.split(None, 5)[5].removeprefix("./") for line in listing.stdout.splitlines()]
    assert {f"{UNIT_DIRECTORY}/{unit}" for unit in UNITS} <= set(paths)
    assert not [path for path in paths if path.startswith("lib/")]


@pytest.mark.parametrize(
    "unit",
    [
        "pbs-policy.socket",
        "pbs-policy@0.service",
        "pbs-policy-server.socket",
        "pbs-policy-server.service",
        "pbs-journal.service",
    ],
)
def test_unit_verifies_clean(verify_root: Path, unit: str) -> None:
    status, complaints = verify(verify_root, unit)
    assert status == 0 and complaints == "", complaints


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


def test_the_server_socket_passes_its_listener_to_one_service(unpacked: Path) -> None:
    lines = (unpacked / UNIT_DIRECTORY / "pbs-policy-server.socket").read_text().splitlines()
    assert "Accept=no" in lines


def test_verify_notices_a_missing_binary(verify_root: Path, tmp_path: Path) -> None:
    """The check above is real: without the package's command it fails."""
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    (root / "usr/bin/pbs-activated").unlink()
    (root / PYTHON.lstrip("/")).unlink()
    status, complaints = verify(root, "pbs-journal.service", "pbs-policy@0.service")
    assert status != 0 and "is not executable" in complaints


def test_tcp_listener_example_verifies_clean(verify_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    drop_in = root / "etc/systemd/system/pbs-policy.socket.d/tcp.conf"
    drop_in.parent.mkdir(parents=True)
    shutil.copy(root / "usr/share/doc/pbs-activated/examples/pbs-policy-tcp.conf", drop_in)
    status, complaints = verify(root, "pbs-policy.socket")
    assert status == 0 and complaints == "", complaints


def test_tcp_listener_example_listens_on_loopback_only() -> None:
    text = (REPO / "docs/examples/pbs-policy-tcp.conf").read_text()
    listeners = re.findall(r"^ListenStream=(.*)$", text, re.MULTILINE)
    assert listeners and all(re.fullmatch(r"127\.0\.0\.1:\d+", item) for item in listeners)
    assert "IPAddressDeny=any" in text.splitlines()
    assert "IPAddressAllow=localhost" in text.splitlines()
