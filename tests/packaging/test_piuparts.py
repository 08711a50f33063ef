"""Debian's installation tester and adequate find nothing wrong, on every release.

piuparts installs the .deb with its dependencies into a minimal chroot, purges it
and checks that nothing is left or broken; it reinstalls after a remove; and it
installs the previous release (0.2.0, offered through `--extra-repo` from a local
apt repository) and upgrades it to this .deb. After each installation it runs
adequate (broken symlinks, missing libraries, units naming unknown users...), and
`--fail-if-inadequate` makes any tag a failure: adequate "reports nothing" is
asserted by piuparts itself and, from its log, here.

Each release with its own tools: bookworm's piuparts (1.1.7) and adequate (0.15.9)
are the host's; trixie's (1.6.0, 0.17.5) run in a cached trixie root
(releasetools.PIUPARTS): bookworm's piuparts does not know trixie's debconf. The
chroots start from a debootstrap minbase tarball cached per release under
/var/cache/pbs-activated-tests/piuparts-base-<release>-<recipe hash>.tgz; the
dependencies come from the archive (releasetools.MIRROR) on every run.

piuparts never starts a service: what running leaves behind is the booted tests'
business (tests/system).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from debpackage import debian_environment, project_version
from releasetools import (
    CACHE_DIR,
    MIRROR,
    PIUPARTS,
    RELEASES,
    RootError,
    Tools,
    host_release,
    missing_requirements,
    tools_of,
)
from support import deb_of_commit

LAST_0_2_COMMIT = "8b4c2343f2f661076d2ff5060dd2463357d06429"
"""The last commit whose pyproject.toml says 0.2.0: the release sites upgrade from."""
PREVIOUS_VERSION = "0.2.0"
BASE_RECIPE_VERSION = "1"
"""Bump when the base tarball's build changes in a way its recipe does not show."""
PASSED = "PASS: All tests."


def base_tarball(release: str) -> Path:
    """`release`'s minbase chroot as a tarball for piuparts' --basetgz, built once.

    Built beside the other cached roots, under a lock and renamed into place when
    complete, so a parallel or interrupted run never takes half a tarball.
    """
    recipe = {
        "release": release,
        "mirror": MIRROR,
        "variant": "minbase",
        "version": BASE_RECIPE_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    tarball = CACHE_DIR / f"piuparts-base-{release}-{key}.tgz"
    if tarball.is_file():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".piuparts-base-{release}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file():
            return tarball
        tree = CACHE_DIR / f".piuparts-base-{release}-{os.getpid()}.partial"
        partial = tarball.with_name(f".{tarball.name}.{os.getpid()}.partial")
        try:
            for command in (
                ["debootstrap", "--variant=minbase", release, str(tree), MIRROR],
                ["tar", "-C", str(tree), "-czf", str(partial), "."],
            ):
                result = subprocess.run(
                    command, capture_output=True, text=True, env=debian_environment()
                )
                if result.returncode != 0:
                    raise RootError(f"{command[0]} failed: {result.stdout[-3000:]}{result.stderr}")
            partial.rename(tarball)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=False)
            partial.unlink(missing_ok=True)
    return tarball


@pytest.fixture(scope="session")
def previous_deb() -> Path:
    """0.2.0's .deb, built from this repository's history."""
    return deb_of_commit(LAST_0_2_COMMIT, PREVIOUS_VERSION)


@dataclass(frozen=True)
class Piuparts:
    """One release's piuparts, its base tarball and what it tests, in a work directory."""

    tools: Tools
    base: Path
    work: Path
    """Shared with the tools (SHARED in a root): the .debs, the repository, the log."""

    def run(self, deb: Path, name: str, *options: str) -> PiupartsRun:
        """piuparts on `deb` with `options` ({shared}: where it sees `work`); its exit
        status and its log, `name`.log."""
        log = self.work / f"{name}.log"
        started = time.monotonic()
        result = self.tools.run(
            lambda seen: [
                "piuparts",
                "--distribution",
                self.tools.release,
                "--mirror",
                MIRROR,
                "--basetgz",
                str(seen / self.base.name),
                "--tmpdir",
                str(seen / "chroots"),
                "--fail-if-inadequate",
                "--log-file",
                str(seen / log.name),
                *(option.replace("{shared}", str(seen)) for option in options),
                str(seen / deb.name),
            ],
            self.work,
            installing=True,
        )
        text = log.read_text() if log.exists() else ""
        return PiupartsRun(result, text, time.monotonic() - started)


@dataclass(frozen=True)
class PiupartsRun:
    result: subprocess.CompletedProcess[str]
    log: str
    seconds: float

    def explain(self) -> str:
        """The end of the log, where piuparts says what failed, and the output."""
        return f"{self.log[-6000:]}\n{self.result.stdout[-2000:]}\n{self.result.stderr[-2000:]}"


@pytest.fixture(scope="module", params=RELEASES)
def piuparts(
    request: pytest.FixtureRequest,
    deb: Path,
    previous_deb: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Piuparts:
    """`release`'s piuparts with the .deb, a local repository of 0.2.0 and the base."""
    release = request.param
    reason = missing_requirements()
    if reason:
        pytest.skip(f"piuparts: {reason}")
    if release == host_release() and not (shutil.which("piuparts") and shutil.which("adequate")):
        pytest.fail("piuparts or adequate is missing: run the tests through `make test`")
    try:
        tools = tools_of(release, PIUPARTS)
        base = base_tarball(release)
    except RootError as error:
        pytest.fail(f"could not prepare {release}'s piuparts: {error}")
    work = tmp_path_factory.mktemp(f"piuparts-{release}")
    (work / "chroots").mkdir()
    try:
        os.link(base, work / base.name)
    except OSError:
        shutil.copyfile(base, work / base.name)
    shutil.copyfile(deb, work / deb.name)
    repository = work / "previous"
    repository.mkdir()
    shutil.copyfile(previous_deb, repository / f"pbs-activated_{PREVIOUS_VERSION}_all.deb")
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repository,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (repository / "Packages").write_text(packages)
    return Piuparts(tools, base, work)


@pytest.fixture(scope="module")
def upgrade_run(piuparts: Piuparts, deb: Path) -> PiupartsRun:
    """piuparts' default tests: install and purge, then 0.2.0 upgraded to this .deb."""
    return piuparts.run(
        deb,
        "upgrade",
        "--bindmount={shared}/previous",
        "--extra-repo=deb [trusted=yes] file://{shared}/previous ./",
    )


def test_piuparts_installs_purges_and_upgrades_from_the_previous_version(
    upgrade_run: PiupartsRun,
) -> None:
    assert upgrade_run.result.returncode == 0, upgrade_run.explain()
    assert PASSED in upgrade_run.log, upgrade_run.explain()
    assert "PASS: Installation and purging test." in upgrade_run.log


def test_the_upgrade_really_ran(upgrade_run: PiupartsRun) -> None:
    """Without the previous version in a repository piuparts only logs that it can't
    test the upgrade, and passes: the log must show 0.2.0 unpacked over."""
    assert "Can't test upgrade" not in upgrade_run.log
    assert f"Setting up pbs-activated ({PREVIOUS_VERSION})" in upgrade_run.log
    over = f"Unpacking pbs-activated ({project_version()}) over ({PREVIOUS_VERSION})"
    assert over in upgrade_run.log, upgrade_run.explain()
    assert "PASS: Installation, upgrade and purging tests." in upgrade_run.log


def test_adequate_reports_nothing(upgrade_run: PiupartsRun) -> None:
    """piuparts ran adequate after each installation, and adequate had nothing to say."""
    assert "Running adequate version" in upgrade_run.log, upgrade_run.explain()
    complaints = [
        line
        for line in upgrade_run.log.splitlines()
        if line.startswith("  pbs-activated: ") or "adequate resulted" in line
    ]
    assert not complaints, "\n".join(complaints)


def test_piuparts_installs_again_after_a_remove(piuparts: Piuparts, deb: Path) -> None:
    run = piuparts.run(deb, "reinstall", "--install-remove-install", "--no-upgrade-test")
    assert run.result.returncode == 0, run.explain()
    assert PASSED in run.log and "Reinstalling after remove" in run.log, run.explain()
