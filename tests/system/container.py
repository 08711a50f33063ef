"""Throwaway Debian containers with systemd as PID 1, for system tests.

Why this exists: pbs-activated is a set of systemd socket-activated units that
read the journal, talk to Redis and answer Postfix policy requests. Mocks cannot
show that the units, the journal's trusted fields and Postfix/Dovecot really fit
together, so the system tests boot a real (but disposable) Debian: each
``Target`` is a release (bookworm, trixie) with a store (Redis, Valkey).

Design, in short:

* ``ensure_rootfs(target)`` builds the target's root file system once with
  debootstrap (plus the mail packages) and caches it under
  ``/var/cache/pbs-activated-tests``: one tree per (release, store). The cache
  key is a hash of the recipe, so changing the package list rebuilds.
* ``Container`` boots a copy-on-write view of that tree with
  ``systemd-nspawn --boot``.  The overlay mount is made inside a private mount
  namespace (``unshare -m``), so it disappears with the container even if the
  test process is SIGKILLed - no stale mounts on the host.
* Commands run inside through ``nsenter`` into all of the container's
  namespaces; host programs (e.g. the host's Python as a mail client) can run in
  just the container's network namespace with ``Container.netns_run``.

The host does not need systemd as PID 1: ``--register=no`` (no machined) and
``--keep-unit`` (no transient scope via the host's D-Bus) make nspawn work
without it.  Only stdlib is used so the module runs with Debian's python3.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pbs.system.container")

MIRROR = os.environ.get("PBS_TEST_MIRROR", "http://deb.debian.org/debian")
CACHE_DIR = Path(os.environ.get("PBS_TEST_CACHE", "/var/cache/pbs-activated-tests"))
# Containers' writable layers live here (not /tmp: may be a small tmpfs elsewhere).
WORK_DIR = Path(os.environ.get("PBS_TEST_WORKDIR", "/var/tmp"))

# Installed by debootstrap itself: what a booting systemd container needs.
BOOT_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "netbase",
    "python3",
]
# Installed in a second step, after the debconf preseed, so that Postfix is
# configured non-interactively with a known mailer type and mailname; the POP/IMAP
# server's packages (Target.server.packages, after postfix) and the store's
# (Target.store.packages) come with them. openssl makes the self-signed
# certificate of the TLS fixtures (capture_fixtures.py). curl (POP3/IMAP) and swaks
# (SMTP) are the real clients from Debian that prove the product (issue #22).
MAIL_PACKAGES = [
    "postfix",
    "python3-redis",
    "python3-systemd",
    "openssl",
    "curl",
    "swaks",
]
MAILNAME = "mx.example.test"
DEBCONF_SELECTIONS = f"""\
postfix postfix/main_mailer_type select Internet Site
postfix postfix/mailname string {MAILNAME}
postfix postfix/destinations string {MAILNAME}, example.test, localhost
"""
# Bump when the build steps change in a way the package list does not show.
RECIPE_VERSION = "1"

# A clean environment for commands inside; the host's PATH (pyenv...) must not leak.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class ContainerError(RuntimeError):
    """The container could not be built, booted or reached."""


@dataclass(frozen=True)
class Store:
    """A Redis-compatible store as Debian packages it: what to install, start and ask."""

    name: str
    packages: tuple[str, ...]
    unit: str
    cli: str


REDIS = Store("redis", ("redis-server", "redis-tools"), "redis-server.service", "redis-cli")
# trixie's Valkey has no redis-cli and no redis-server.service: its own names throughout.
VALKEY = Store("valkey", ("valkey-server", "valkey-tools"), "valkey-server.service", "valkey-cli")


@dataclass(frozen=True)
class Server:
    """A POP3/IMAP server as Debian packages it: the packages that conflict with the others'."""

    name: str
    packages: tuple[str, ...]


DOVECOT = Server("dovecot", ("dovecot-pop3d", "dovecot-imapd"))
# courier-pop and courier-imap ship the TLS daemons' units (courier-pop-ssl...)
# themselves; courier-authdaemon (PAM) and the certificate tools come as dependencies.
COURIER = Server("courier", ("courier-pop", "courier-imap"))
# sasl2-bin: saslauthd, through which Cyrus checks PAM passwords.
CYRUS = Server("cyrus", ("cyrus-imapd", "cyrus-pop3d", "sasl2-bin"))


@dataclass(frozen=True)
class Target:
    """One booted-system combination: a Debian release (its suite name), a store and
    the POP/IMAP server (Dovecot unless the name says another)."""

    release: str
    store: Store
    server: Server = DOVECOT

    @property
    def name(self) -> str:
        """`trixie+valkey`, `bookworm+courier`: how PBS_TEST_TARGETS, test ids and logs name it.

        A Dovecot target is named by its store (the names predate other servers);
        another server's target by the server, its store being Redis.
        """
        if self.server is DOVECOT:
            return f"{self.release}+{self.store.name}"
        return f"{self.release}+{self.server.name}"


# bookworm has no Valkey; trixie has both. Courier and Cyrus conflict with Dovecot
# (and each other) as packages, so each has a tree of its own per release. Package
# names are checked by building each rootfs from the real archive (apt-get fails
# on a name the release lacks).
TARGETS = {
    target.name: target
    for target in (
        Target("bookworm", REDIS),
        Target("trixie", REDIS),
        Target("trixie", VALKEY),
        Target("bookworm", REDIS, COURIER),
        Target("trixie", REDIS, COURIER),
        Target("bookworm", REDIS, CYRUS),
        Target("trixie", REDIS, CYRUS),
    )
}
DEFAULT_TARGET = TARGETS["trixie+redis"]
"""Today's stable with the store the package recommends."""


def target_named(name: str) -> Target:
    """The Target called `name` (`bookworm+redis`...), or ValueError naming the choices."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}: one of {', '.join(TARGETS)}") from None


TARGETS_VARIABLE = "PBS_TEST_TARGETS"
FULL, SMOKE = "full", "smoke"
DEFAULT_TIERS = {
    "bookworm+redis": FULL,
    "trixie+redis": FULL,
    "trixie+valkey": SMOKE,
    "bookworm+courier": SMOKE,
    "trixie+courier": SMOKE,
    "bookworm+cyrus": SMOKE,
    "trixie+cyrus": SMOKE,
}
"""Every test once per release, a smoke run for the other store and for each other
server (test_servers.py): well inside the hour `make test` may take on two cores
(README.md has the timings)."""
UPGRADE = "upgrade"
"""The pseudo-target of test_dist_upgrade.py: bookworm+redis upgraded to trixie."""


def selected_targets(value: str | None = None) -> tuple[dict[str, str], bool]:
    """({target name: tier}, whether the dist-upgrade runs) from PBS_TEST_TARGETS.

    Unset or empty: DEFAULT_TIERS and the upgrade. Otherwise names separated by
    spaces or commas, each optionally `:full` or `:smoke`; `upgrade` names the
    dist-upgrade test. An unknown name is an error, not a silent skip.
    """
    text = os.environ.get(TARGETS_VARIABLE, "") if value is None else value
    words = text.replace(",", " ").split()
    if not words:
        return dict(DEFAULT_TIERS), True
    tiers: dict[str, str] = {}
    upgrade = False
    for word in words:
        name, _, tier = word.partition(":")
        if name == UPGRADE and not tier:
            upgrade = True
            continue
        target_named(name)  # ValueError naming the choices
        tier = tier or DEFAULT_TIERS[name]
        if tier not in (FULL, SMOKE):
            raise ValueError(f"{TARGETS_VARIABLE}: tier of {name} must be {FULL} or {SMOKE}")
        tiers[name] = tier
    return tiers, upgrade


REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "unshare", "nsenter", "setpriv")


def missing_requirements() -> str | None:
    """Why containers cannot run here, or None when they can (tests skip, the demo stops)."""
    if os.geteuid() != 0:
        return "booting a container needs root (systemd-nspawn, mounts, namespaces)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"booting a container needs {', '.join(missing)}"
            " (apt-get install systemd-container debootstrap util-linux)"
        )
    return None


# --------------------------------------------------------------------------
# Root file system cache
# --------------------------------------------------------------------------


def mail_packages(target: Target) -> list[str]:
    """What the second build step installs: the mail stack, the target's server and store.

    In the order the Dovecot-only recipe had, so that its trees keep their hash.
    """
    return [MAIL_PACKAGES[0], *target.server.packages, *MAIL_PACKAGES[1:], *target.store.packages]


def recipe_key(target: Target) -> str:
    """Hash everything that determines the rootfs content; it names the cache entry."""
    recipe = {
        "suite": target.release,
        "mirror": MIRROR,
        "boot": BOOT_PACKAGES,
        "mail": mail_packages(target),
        "debconf": DEBCONF_SELECTIONS,
        "version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_path(target: Target) -> Path:
    """Where the target's cached tree is (or will be): `rootfs-<release>-<store>-<hash>`."""
    name = target.name.replace("+", "-")
    return CACHE_DIR / f"rootfs-{name}-{recipe_key(target)}"


def ensure_rootfs(target: Target = DEFAULT_TARGET) -> Path:
    """Return the target's cached rootfs, building it first if needed.

    The build goes to a temporary directory that is renamed into place only
    when complete, so an interrupted build never looks like a valid cache.
    A lock file serialises parallel test runs so only one of them builds.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = rootfs_path(target)
    if path.is_dir():
        return path
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_dir():  # somebody else built it while we waited
            return path
        _remove_stale_builds()
        build_dir = CACHE_DIR / f".build-{recipe_key(target)}-{os.getpid()}"
        started = time.monotonic()
        try:
            _build_rootfs(build_dir, target)
        except BaseException:
            _remove_tree(build_dir)
            raise
        os.rename(build_dir, path)
        log.info("built rootfs %s in %.0fs", path, time.monotonic() - started)
    return path


def _remove_stale_builds() -> None:
    """Delete leftovers of interrupted builds (we hold the lock, so none is live)."""
    for stale in CACHE_DIR.glob(".build-*"):
        log.warning("removing stale partial build %s", stale)
        _remove_tree(stale)


def _build_rootfs(root: Path, target: Target) -> None:
    """debootstrap a minimal release, then install the mail stack with a preseed."""
    log.info("debootstrap %s into %s (takes a minute or two)", target.release, root)
    _run_host(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(BOOT_PACKAGES),
            target.release,
            str(root),
            MIRROR,
        ],
        timeout=1800,
    )
    # No daemon may start during package installation: there is no init here.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "root/debconf-selections").write_text(DEBCONF_SELECTIONS)
    (root / "etc/hostname").write_text(MAILNAME + "\n")
    (root / "etc/mailname").write_text(MAILNAME + "\n")
    script = " && ".join(
        [
            "debconf-set-selections /root/debconf-selections",
            "apt-get update -q",
            "apt-get install -y -q --no-install-recommends " + " ".join(mail_packages(target)),
            "apt-get clean",
        ]
    )
    _run_host(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--pipe",
            "-E",
            "DEBIAN_FRONTEND=noninteractive",
            "-D",
            str(root),
            "/bin/sh",
            "-c",
            script,
        ],
        timeout=1800,
    )
    policy.unlink()
    (root / "root/debconf-selections").unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    stamp = {
        "target": target.name,
        "key": recipe_key(target),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (root / "etc/pbs-test-rootfs.json").write_text(json.dumps(stamp) + "\n")


# --------------------------------------------------------------------------
# Host helpers
# --------------------------------------------------------------------------


def _run_host(argv: Sequence[str], timeout: float = 120) -> None:
    """Run a host command, raising with its output when it fails."""
    log.debug("host: %s", " ".join(argv))
    proc = subprocess.run(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
    )
    if proc.returncode != 0:
        tail = proc.stdout.decode(errors="replace")[-4000:]
        raise ContainerError(f"{argv[0]} failed with {proc.returncode}:\n{tail}")


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below path in the host's mount table, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            mountpoint = line.split()[1].replace("\\040", " ")
            if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -rf that never follows into mounts (debootstrap bind-mounts /proc, /sys...)."""
    if not path.exists():
        return
    for mountpoint in _mounts_below(path):
        subprocess.run(["umount", "-l", mountpoint], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


WORKDIR_PREFIX = "pbs-test-ct-"
OWNER_FILE = "owner.pid"


def _remove_stale_workdirs() -> None:
    """Delete work dirs of containers whose test process died without cleanup.

    Their nspawn is gone too (it got SIGTERM through --pdeathsig, and the
    overlay mount lived only in nspawn's mount namespace), only files remain.
    """
    for workdir in WORK_DIR.glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            if time.time() - workdir.stat().st_mtime < 60:
                continue  # just being created by a parallel run
            owner = 0
        if owner and Path(f"/proc/{owner}").exists():
            continue
        log.warning("removing stale container work dir %s", workdir)
        _remove_tree(workdir)


def _pid1_of(nspawn_pid: int) -> int | None:
    """The container's init: the child of nspawn whose PID in its own namespace is 1."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0").strip())
        nspid = fields.get("NSpid", "").split()
        if ppid == nspawn_pid and len(nspid) >= 2 and nspid[-1] == "1":
            return int(entry.name)
    return None


# --------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------


class Container:
    """A booted Debian (the target's release and store) with systemd as PID 1.

    Use as a context manager::

        with Container(TARGETS["trixie+valkey"]) as ct:
            ct.run(["systemctl", "status", "postfix"])

    Everything written inside goes to an overlay upper directory that is
    deleted on teardown; the cached rootfs is never modified. ``halt()`` powers
    off but keeps that directory, so the same system can be changed offline
    (``run_offline``, e.g. a dist-upgrade) and booted again with ``start()``.
    """

    def __init__(
        self,
        target: Target = DEFAULT_TARGET,
        rootfs: Path | None = None,
        name: str | None = None,
        hostname: str = MAILNAME,
        boot_timeout: float = 120,
    ) -> None:
        self.target = target
        self.rootfs = rootfs
        self.name = name or f"pbs-test-{uuid.uuid4().hex[:8]}"
        self.hostname = hostname
        self.boot_timeout = boot_timeout
        self.workdir: Path | None = None
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # host PID of the container's PID 1
        self.boot_seconds: float | None = None
        self._console: io.BufferedWriter | None = None

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Prepare the root (or keep a halted one's), start nspawn, wait for the boot."""
        if self.rootfs is None:
            self.rootfs = ensure_rootfs(self.target)
        atexit.register(self.stop)  # last resort if the caller forgets __exit__
        started = time.monotonic()
        self._prepare_workdir()
        self._spawn()
        self.pid = self._wait_for_pid1()
        self.wait_until_booted()
        self.boot_seconds = time.monotonic() - started
        log.info(
            "container %s (%s) booted in %.1fs (pid1=%d)",
            self.name,
            self.target.name,
            self.boot_seconds,
            self.pid,
        )

    def _prepare_workdir(self) -> None:
        """A new work dir (upper, work, mount point) unless a halted container left one."""
        if self.workdir is not None:
            return
        _remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=WORK_DIR))
        (self.workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        for sub in ("upper", "work", "root"):
            (self.workdir / sub).mkdir()

    @property
    def console_log(self) -> Path:
        """The container's console output (boot messages), useful when a boot fails."""
        assert self.workdir is not None
        return self.workdir / "console.log"

    def _in_overlay(self, nspawn: Sequence[str]) -> list[str]:
        """The host command that runs nspawn in a private mount namespace holding the overlay.

        Doing the overlay mount in ``unshare -m`` means the mount exists only as
        long as nspawn runs.  A tmpfs on /run/systemd/nspawn keeps nspawn's
        propagation directory off the host (whose /run is not a tmpfs here and
        nspawn then refuses to clean it up).  ``--pdeathsig``: if this Python
        process dies without cleaning up (SIGKILL), nspawn gets SIGTERM, which
        makes it power the container off.
        """
        assert self.workdir is not None and self.rootfs is not None
        overlay = (
            f"lowerdir={self.rootfs},upperdir={self.workdir}/upper,workdir={self.workdir}/work"
        )
        script = (
            "set -e; mount --make-rprivate /; "
            f"mount -t overlay overlay -o '{overlay}' '{self.workdir}/root'; "
            "mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn; "
            'exec "$@"'
        )
        return [
            "setpriv",
            "--pdeathsig",
            "TERM",
            "--",
            "unshare",
            "--mount",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
            *nspawn,
        ]

    def _spawn(self) -> None:
        """Start the booting nspawn, its console going to console_log."""
        assert self.workdir is not None
        nspawn = [
            "systemd-nspawn",
            "--boot",
            "--register=no",  # no systemd-machined on the host
            "--keep-unit",  # don't ask the host's (absent) systemd for a scope
            "--private-network",  # only lo; tests add their addresses to it
            "--console=read-only",
            f"--machine={self.name}",
            f"--hostname={self.hostname}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "-D",
            f"{self.workdir}/root",
        ]
        self._console = open(self.console_log, "ab")  # noqa: SIM115 - closed in halt()
        self.nspawn = subprocess.Popen(
            self._in_overlay(nspawn),
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not hit nspawn directly
            env={"PATH": CONTAINER_ENV["PATH"], "LANG": "C.UTF-8"},
        )

    def run_offline(
        self, script: str, binds: Sequence[tuple[Path, str]] = (), timeout: float = 1800
    ) -> str:
        """Run a shell script in the halted container's root, with the host's network.

        What an administrator does to a powered-off system (the rootfs build does
        the same): no boot, no private network, so apt reaches the archive. binds
        are (host directory, container path) pairs, e.g. a shared apt cache.
        Returns the script's output; raises ContainerError when it fails.
        """
        if self.nspawn is not None:
            raise ContainerError("run_offline needs a halted container")
        if self.rootfs is None:
            self.rootfs = ensure_rootfs(self.target)
        self._prepare_workdir()
        assert self.workdir is not None
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--pipe",
            "-E",
            "DEBIAN_FRONTEND=noninteractive",
            *(f"--bind={host}:{inside}" for host, inside in binds),
            "-D",
            f"{self.workdir}/root",
            "/bin/sh",
            "-c",
            script,
        ]
        proc = subprocess.run(
            self._in_overlay(nspawn),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env={"PATH": CONTAINER_ENV["PATH"], "LANG": "C.UTF-8"},
        )
        output = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            raise ContainerError(f"offline script failed with {proc.returncode}:\n{output[-4000:]}")
        return output

    def _wait_for_pid1(self) -> int:
        """Poll /proc until nspawn has forked the container's init."""
        assert self.nspawn is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise ContainerError(self._failure("nspawn exited early"))
            pid = _pid1_of(self.nspawn.pid)
            if pid is not None:
                return pid
            time.sleep(0.05)
        raise ContainerError(self._failure("container init did not appear"))

    def wait_until_booted(self) -> str:
        """Block until systemd finished booting; return the system state.

        "degraded" is accepted (a container lacks some hardware-ish units), but
        the failed units are logged so a surprising failure is visible.
        """
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self.nspawn is None or self.nspawn.poll() is not None:
                raise ContainerError(self._failure("container stopped while booting"))
            try:
                proc = self.run(
                    ["systemctl", "is-system-running", "--wait"],
                    check=False,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                break
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run(["systemctl", "--failed", "--no-legend"], check=False)
                    log.warning("container %s is degraded:\n%s", self.name, failed.stdout)
                return state
            if state in ("stopping", "maintenance"):
                break
            time.sleep(0.2)  # systemd not yet reachable ("offline"/empty): retry
        raise ContainerError(self._failure(f"boot did not finish (state {state!r})"))

    def stop(self) -> None:
        """Power off, or kill, the container and delete its files.  Idempotent."""
        self.halt()
        if self.workdir is not None:
            _remove_tree(self.workdir)
            self.workdir = None
        atexit.unregister(self.stop)

    def halt(self) -> None:
        """Power off, or kill, the container, keeping its files for another start().

        The order matters: poweroff lets services stop cleanly; SIGTERM makes
        nspawn request the same; SIGKILL to the container's PID 1 ends its
        whole PID namespace, so no process can survive teardown.
        """
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.pid is not None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            if not self._wait_nspawn(20):
                self.nspawn.send_signal(signal.SIGTERM)
            if not self._wait_nspawn(10):
                if self.pid is not None:
                    _kill_quietly(self.pid)
                self.nspawn.kill()
                self._wait_nspawn(10)
        self.nspawn = None
        self.pid = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def _wait_nspawn(self, seconds: float) -> bool:
        assert self.nspawn is not None
        try:
            self.nspawn.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _failure(self, what: str) -> str:
        """An error message with the tail of the console log attached."""
        try:
            console = self.console_log.read_text(errors="replace")[-3000:]
        except (OSError, AssertionError):
            console = "(no console log)"
        return f"container {self.name}: {what}\n--- console ---\n{console}"

    # ---- running things --------------------------------------------------

    def _nsenter(self, namespaces: Sequence[str]) -> list[str]:
        if self.pid is None:
            raise ContainerError("container is not running")
        return ["nsenter", "-t", str(self.pid), *namespaces, "--"]

    def run(
        self,
        cmd: Sequence[str] | str,
        check: bool = True,
        input: str | bytes | None = None,  # noqa: A002 - mirrors subprocess.run
        user: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all namespaces), like subprocess.run.

        A string is run with /bin/sh -c.  Output is captured as text; with
        check=True a failure raises CalledProcessError whose message includes
        stderr, so test failures are readable.  The process is not in any
        systemd unit of the container (its cgroup is outside the container's).
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        full_env = {**CONTAINER_ENV, **(env or {})}
        if user is not None:
            full_env["HOME"] = "/"  # runuser keeps the environment; avoid /root
        envargs = ["env", "-i", *(f"{k}={v}" for k, v in full_env.items())]
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [*self._nsenter(["-a"]), *envargs, *argv],
            input=data,
            capture_output=True,
            timeout=timeout,
            env={"PATH": CONTAINER_ENV["PATH"]},
        )
        result = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
        return result

    def netns_run(
        self,
        argv: Sequence[str],
        check: bool = True,
        input: str | None = None,  # noqa: A002
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a *host* program inside only the container's network namespace.

        This is how tests act as network clients: the host's /usr/bin/python3
        sees the container's lo with the test addresses, while the file system
        (and the test code) stays the host's.
        """
        return subprocess.run(
            [*self._nsenter(["-n"]), *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    # ---- files -------------------------------------------------------------

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a file inside the container (parents are created).

        Written through a shell inside, so symlinks resolve in the container's
        view and not the host's.
        """
        data = content.encode() if isinstance(content, str) else content
        self.run(
            [
                "/bin/sh",
                "-c",
                'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"',
                "sh",
                path,
                f"{mode:o}",
            ],
            input=data,
        )

    def read_file(self, path: str) -> str:
        """Return a text file's content from inside the container."""
        return self.run(["cat", path]).stdout

    def copy_in(self, host_path: str | os.PathLike[str], container_path: str) -> None:
        """Copy a host file, or a directory tree (via tar), to container_path.

        A file keeps its permission bits; a directory's content lands in
        container_path, owned by root.
        """
        source = Path(host_path)
        if not source.is_dir():
            self.write_file(container_path, source.read_bytes(), source.stat().st_mode & 0o7777)
            return
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=".")
        self.run(
            [
                "/bin/sh",
                "-c",
                'mkdir -p "$1" && tar -C "$1" -xf - --no-same-owner',
                "sh",
                container_path,
            ],
            input=buffer.getvalue(),
        )

    # ---- conveniences ------------------------------------------------------

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """systemctl inside the container."""
        return self.run(["systemctl", *args], check=check)

    def journal(self, *args: str, after_cursor: str | None = None) -> list[dict[str, Any]]:
        """journalctl -o json inside the container, parsed (one dict per entry).

        args are journalctl arguments, typically matches such as
        "_SYSTEMD_UNIT=dovecot.service".  With after_cursor (from
        journal_cursor()) only entries written since then are returned.

        Beware: journalctl's own --after-cursor combined with a match that the
        cursor entry does not satisfy silently drops the first matching entry
        (systemd 252 skips two entries).  So this uses --cursor (inclusive)
        and removes the cursor entry itself.
        """
        argv = ["journalctl", "--no-pager", "-o", "json", *args]
        if after_cursor is not None:
            argv.append(f"--cursor={after_cursor}")
        out = self.run(argv).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries if e.get("__CURSOR") != after_cursor]

    def log_from_unit(
        self, unit: str, identifier: str, message: str, user: str | None = None
    ) -> None:
        """Send a syslog line from a transient service unit (e.g. a forged Dovecot line).

        Why not ``run(["logger", ...])``: processes started by run() belong to
        no unit of the container (no _SYSTEMD_UNIT), and a short-lived sender
        often gets no trusted fields at all because it is gone before journald
        looks at /proc.  The sender here lives for a second, inside a real unit.
        """
        argv = ["systemd-run", "--wait", "--quiet", "--collect", f"--unit={unit}"]
        if user is not None:
            argv += ["-p", f"User={user}"]
        self.run([*argv, "/usr/bin/python3", "-c", SYSLOG_SENDER, identifier, message])

    def journal_cursor(self) -> str:
        """Cursor of the newest journal entry: remember it before an action, then
        read only what the action logged with journal(after_cursor=...)."""
        self.run(["journalctl", "--sync"], check=False)
        out = self.run(["journalctl", "--no-pager", "-n", "1", "-o", "json"]).stdout
        return str(json.loads(out)["__CURSOR"])

    def wait_for_journal(
        self,
        *matches: str,
        contains: str,
        after_cursor: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Wait until an entry matching the journalctl matches has contains in MESSAGE.

        Logging is asynchronous (Dovecot's log process, journald), so a test
        must poll instead of reading the journal right after the action.
        """
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.journal(*matches, after_cursor=after_cursor):
                if contains in str(entry.get("MESSAGE", "")):
                    return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"no journal entry {matches} containing {contains!r}")
            time.sleep(0.1)


SYSLOG_SENDER = """\
import sys, syslog, time
syslog.openlog(sys.argv[1], 0, syslog.LOG_MAIL)
syslog.syslog(syslog.LOG_INFO, sys.argv[2])
time.sleep(1)  # stay alive: journald reads _COMM, _EXE, cgroup... from /proc afterwards
"""


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class CommandFailed(subprocess.CalledProcessError):
    """CalledProcessError whose message shows the output: test failures explain themselves."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\nstdout:\n{(self.stdout or '')[-2000:]}"
            f"\nstderr:\n{(self.stderr or '')[-2000:]}"
        )
