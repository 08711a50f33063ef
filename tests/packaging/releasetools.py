"""Each supported Debian release's own lintian and systemd-analyze, on this host.

Why: the .deb is built once and installed on Debian 12 and Debian 13 alike, and each
release's checkers know different things (trixie's lintian reports files under
the aliased `/lib` as errors, bookworm's systemd does not know keys that trixie's
does). The host's own tools cover the host's release; for the other release a root
file system is bootstrapped once (`debootstrap --variant=minbase` plus lintian,
systemd, python3 and man-db, from Debian's archive only) and cached under
/var/cache/pbs-activated-tests/lintian-<release>-<recipe hash>/, the way
tests/system/container.py caches its booted root. The tools then run in it with
`systemd-nspawn` (no boot, no network, the root read-only), with one host
directory visible read-only at SHARED.

The installation testers (piuparts, adequate: trixie's piuparts knows trixie's
debconf, bookworm's does not) are another Kit with a root of its own,
piuparts-<release>-<recipe hash>/; they run the same way but with the host's
network and SHARED writable (Tools.run's `installing`).

Kept apart from tests/system/container.py on purpose: a root of checkers has other
packages and another life cycle than a booted mail system, and its builds use
their own lock and their own names, so neither removes the other's half-built tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from debpackage import debian_environment

RELEASES = ("bookworm", "trixie")
"""The releases the package supports, oldest first."""

MIRROR = os.environ.get("PBS_TEST_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("PBS_TEST_CACHE", "/var/cache/pbs-activated-tests"))
PACKAGES = ("lintian", "systemd", "python3", "man-db")
"""lintian; systemd for systemd-analyze and the units a unit may refer to; python3 and
man-db because `systemd-analyze verify` checks ExecStart= binaries and Documentation=
man pages."""
RECIPE_VERSION = "1"
"""Bump when the build steps change in a way the lists above do not show."""


@dataclass(frozen=True)
class Kit:
    """A set of one release's tools with a root of its own: `name` prefixes its cache entry."""

    name: str
    packages: tuple[str, ...]


LINTIAN = Kit("lintian", PACKAGES)
"""The checkers of the built package's files (test_lintian.py, test_units.py)."""
PIUPARTS = Kit("piuparts", ("piuparts", "adequate"))
"""The installation testers (test_piuparts.py): a root of their own, so that adding them
leaves the lintian root's cache entry as it is."""

SHARED = Path("/mnt/pbs-activated")
"""Where a root's tools see the host directory handed to Tools.run."""

BUILD_TIMEOUT = 1800
RUN_TIMEOUT = 300
INSTALL_TIMEOUT = 900
"""An installation test's: piuparts downloads and installs the package's dependencies."""

NSPAWN = (
    "systemd-nspawn",
    "--quiet",
    "--register=no",  # no systemd-machined: the host need not run systemd
    "--keep-unit",  # no transient scope through the host's D-Bus
    "--pipe",
)
"""What every nspawn here starts with: a command in the root, not a booted system."""

NSPAWN_CLEANUP_NOTICE = 'Attempted to remove disk file system under "/run/systemd/nspawn/'
"""What nspawn says on leaving when /run is no tmpfs (no systemd as PID 1 here): about
its own scratch directory, never the command's; dropped from the command's stderr."""

ENVIRONMENT = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
"""The environment inside a root: the host's (pyenv's PATH, a locale) must not leak."""


class RootError(RuntimeError):
    """A release's root of tools could not be built."""


def host_release() -> str:
    """The host's Debian release code name (VERSION_CODENAME in /etc/os-release)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise RootError("/etc/os-release names no VERSION_CODENAME")


def missing_requirements() -> str | None:
    """Why another release's root cannot be built and entered here, or None."""
    if os.geteuid() != 0:
        return "bootstrapping and entering a root file system needs root"
    missing = [tool for tool in ("debootstrap", "systemd-nspawn") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install debootstrap systemd-container)"
    return None


def recipe_key(release: str, kit: Kit = LINTIAN) -> str:
    """A hash of everything that decides a root's content: it names the cache entry."""
    recipe = {
        "release": release,
        "mirror": MIRROR,
        "packages": kit.packages,
        "version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_root(release: str, kit: Kit = LINTIAN) -> Path:
    """The cached root of `release`'s `kit`, bootstrapped first if there is none.

    Built in a directory of its own and renamed into place only when complete, so a
    half-built root never looks like a cached one; a lock per release makes parallel
    test runs wait for one build instead of each bootstrapping.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    key = recipe_key(release, kit)
    target = CACHE_DIR / f"{kit.name}-{release}-{key}"
    if target.is_dir():
        return target
    with open(CACHE_DIR / f".{kit.name}-{release}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():  # built by another run while this one waited
            return target
        for stale in CACHE_DIR.glob(f".{kit.name}-{release}-*.partial"):
            _remove_tree(stale)  # an interrupted build's: the lock says none is live
        partial = CACHE_DIR / f".{kit.name}-{release}-{key}-{os.getpid()}.partial"
        started = time.monotonic()
        try:
            _build_root(release, partial, kit)
        except BaseException:
            _remove_tree(partial)
            raise
        stamp = json.loads((partial / "etc/pbs-activated-tools.json").read_text())
        stamp["build_seconds"] = round(time.monotonic() - started)
        (partial / "etc/pbs-activated-tools.json").write_text(json.dumps(stamp) + "\n")
        os.rename(partial, target)
    return target


def _build_root(release: str, root: Path, kit: Kit) -> None:
    """debootstrap a minimal `release`, then install the kit's tools with apt."""
    _run_host(["debootstrap", "--variant=minbase", release, str(root), MIRROR])
    # Nothing may start during installation: there is no init in here.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    script = " && ".join(
        [
            "apt-get update -q",
            "apt-get install -y -q --no-install-recommends " + " ".join(kit.packages),
            "apt-get clean",
        ]
    )
    _run_host(
        [*NSPAWN, "-E", "DEBIAN_FRONTEND=noninteractive", "-D", str(root), "sh", "-c", script]
    )
    policy.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    # The mount point for Tools.run: a read-only root cannot grow one later.
    (root / SHARED.relative_to("/")).mkdir(parents=True, exist_ok=True)
    versions = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\n", *kit.packages],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    stamp = {
        "release": release,
        "key": recipe_key(release, kit),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": [line for line in versions if line],
    }
    (root / "etc/pbs-activated-tools.json").write_text(json.dumps(stamp) + "\n")


def _run_host(argv: Sequence[str]) -> None:
    """Run a build step, raising with the end of its output when it fails."""
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=debian_environment(),
        timeout=BUILD_TIMEOUT,
    )
    if result.returncode != 0:
        raise RootError(f"{argv[0]} failed with {result.returncode}:\n{result.stdout[-4000:]}")


def _remove_tree(path: Path) -> None:
    """rm -rf that never follows into mounts (debootstrap mounts /proc and /sys inside)."""
    if not path.exists():
        return
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted(points, key=len, reverse=True):
        if point == prefix or point.startswith(prefix + "/"):
            subprocess.run(["umount", "-l", point], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@dataclass(frozen=True)
class Tools:
    """One release's lintian and systemd-analyze: the host's own, or a cached root's."""

    release: str
    root: Path
    """The file system the tools run in and take their units from: `/` for the host."""

    @property
    def on_host(self) -> bool:
        return self.root == Path("/")

    def run(
        self,
        command: Callable[[Path], list[str]],
        shared: Path | None = None,
        installing: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command(where the tools see shared)`; return its result, whatever it is.

        In a cached root, `shared` is bound read-only at SHARED, the root is mounted
        read-only (so runs never change the cache and may run side by side, /tmp being
        a fresh tmpfs) and the network is private: checking needs none. `installing`
        is for an installation tester (piuparts): it writes its chroots and log in
        `shared` and downloads from the archive, so `shared` is writable and the
        network the host's.
        """
        if self.on_host:
            argv = command(shared or SHARED)
        else:
            private = ["--private-network", "--resolv-conf=off"]
            network = ["--resolv-conf=bind-host"] if installing else private
            bind = "--bind" if installing else "--bind-ro"
            argv = [
                *NSPAWN,
                "--read-only",
                *network,
                "--timezone=off",
                "--link-journal=no",
                *([f"{bind}={shared}:{SHARED}"] if shared else []),
                *(f"--setenv={key}={value}" for key, value in ENVIRONMENT.items()),
                "-D",
                str(self.root),
                *command(SHARED),
            ]
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=debian_environment(),
            timeout=INSTALL_TIMEOUT if installing else RUN_TIMEOUT,
        )
        if not self.on_host:
            result.stderr = "".join(
                line
                for line in result.stderr.splitlines(keepends=True)
                if not line.startswith(NSPAWN_CLEANUP_NOTICE)
            )
        return result


def tools_of(release: str, kit: Kit = LINTIAN) -> Tools:
    """`release`'s `kit`: the host's where the host runs it, else a cached root's."""
    if release == host_release():
        return Tools(release, Path("/"))
    return Tools(release, ensure_root(release, kit))
