"""The package's DEP-8 suite (packaging/debian/tests), run by autopkgtest itself, passes.

Debian runs these tests on every upload of the package and of its dependencies;
here each release's own autopkgtest runs them against the built .deb, and its
exit status must be 0 (2 would mean a test was skipped, 8 that all were).

The virt server: autopkgtest-virt-null, run inside a throwaway booted container
of the target (container.py). The tests need a booted system (systemd running
the package's units: `isolation-container`) and root. Neither release's
autopkgtest has an nspawn server; -podman/-docker, -lxc, -qemu and -incus would
each bring a second container or VM manager (and its images) to this host for
what container.py already does, and -ssh would need an SSH server and keys in a
container whose only network is private. -null runs the tests where autopkgtest
runs and cannot revert their changes: inside a container that is booted for this
run alone and deleted afterwards, that is a booted, throwaway testbed, which is
what `isolation-container` asks for. What -null claims differs: bookworm's (5.28)
always claims `isolation-machine`; trixie's (5.49) claims nothing, and its
`--fake-capability isolation-container` crashes (its scratch directory check
asserts that a null testbed has no isolation). So autopkgtest is told
`--ignore-restrictions=isolation-container` on both: the restriction is met by
where autopkgtest runs, not by what the virt server says.

autopkgtest and adequate are installed into the halted container from the
archive (`run_offline`, the host's network; downloads cached under
/var/cache/pbs-activated-tests/autopkgtest-<release>-*), then it is booted with
its private network only: the test dependencies are in the cached rootfs, as for
every system test. After the suite, adequate checks the installed package on
the booted system, as it would on a site's.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import CACHE_DIR, Container, Target
from product import REPO

pytestmark = pytest.mark.system

log = logging.getLogger("pbs.system.autopkgtest")

SOURCE = "/root/pbs-activated-source"
"""Where the source's debian/ (tests/control and the tests) is copied in."""
OUTPUT = "/root/autopkgtest-output"
TOOLS = ("autopkgtest", "adequate", "dpkg-dev")
"""dpkg-dev: autopkgtest reads a source tree with dpkg-source, as in Debian's CI."""


def install_tools(ct: Container, target: Target) -> None:
    """autopkgtest and adequate of the target's release, into the halted container."""
    archives = CACHE_DIR / f"autopkgtest-{target.release}-archives"
    lists = CACHE_DIR / f"autopkgtest-{target.release}-lists"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    script = " && ".join(
        [
            "apt-get update -q",
            "apt-get install -y -q --no-install-recommends " + " ".join(TOOLS),
        ]
    )
    with open(CACHE_DIR / f".autopkgtest-{target.release}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one apt at a time on the shared caches
        ct.run_offline(
            script, binds=[(archives, "/var/cache/apt/archives"), (lists, "/var/lib/apt/lists")]
        )


@pytest.fixture(scope="module")
def testbed(deb: Path, target: Target) -> Iterator[Container]:
    """A booted container of the target with autopkgtest, the .deb and debian/ copied in
    (the package itself not installed: autopkgtest installs it)."""
    ct = Container(target)
    try:
        started = time.monotonic()
        install_tools(ct, target)
        log.info("autopkgtest installed offline in %.0f s", time.monotonic() - started)
        ct.start()
        ct.copy_in(deb, f"/root/{deb.name}")
        ct.copy_in(REPO / "packaging" / "debian", f"{SOURCE}/debian")
        yield ct
    finally:
        ct.stop()


def test_autopkgtest_passes_every_dep8_test(testbed: Container, deb: Path) -> None:
    started = time.monotonic()
    result = testbed.run(
        # --no-built-binaries: the source tree is only read for its tests, never
        # built; the package under test is the .deb.
        ["autopkgtest", "--no-built-binaries", "--ignore-restrictions=isolation-container"]
        + ["--output-dir", OUTPUT, f"/root/{deb.name}", f"{SOURCE}/", "--", "null"],
        check=False,
        timeout=600,
    )
    log.info("autopkgtest ran in %.0f s", time.monotonic() - started)
    summary = testbed.run(["cat", f"{OUTPUT}/summary"], check=False).stdout
    assert result.returncode == 0, f"{summary}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    results = dict(line.split()[:2] for line in summary.splitlines() if line.strip())
    assert results == {"policy-service": "PASS", "policy-server": "PASS"}, summary


def test_adequate_reports_nothing_on_the_booted_system(testbed: Container) -> None:
    """The package as autopkgtest left it installed, in a booted system of the release."""
    assert testbed.run(["dpkg-query", "-W", "-f", "${Status}", "pbs-activated"]).stdout == (
        "install ok installed"
    )
    result = testbed.run(["adequate", "pbs-activated"], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
