"""What code inside the policy units' sandboxes can and cannot do (issue #23).

Why: the handler (`pbs-policy@.service`, one per Postfix connection) and the
Accept=no server (`pbs-policy-server.service`) parse what any SMTP client sends.
Their units' sandbox is what stands between a bug in that code and the host, and
the next change to those units (issue #23: make a start cheaper) must not open
it. So a probe (sandbox_probe.py) runs *as* each installed unit: a drop-in
replaces only ExecStart (the probe, as a oneshot), and the standard streams
(stdout to a file the test reads, since there is no Postfix connection); every
other setting, the user, the namespaces, the filters, is the unit's own.

The rules the probe checks, for both units:

- the store: it authenticates as `pbs-policy` and may GET an authorization,
  never SET one; it can read its own secret and its config, not the reader's or
  the admin's secret;
- other users' files (a home, /root, /etc/shadow, the reader's state), the
  journal's files and other processes are out of sight;
- it writes only to its cache (the handler's parsed config) and to its private
  /tmp and /var/tmp, which nothing outside sees;
- it has no capability, cannot gain one (NoNewPrivileges, setuid fails), and
  sees no device but the pseudo-devices;
- it can neither write a kernel tunable or cgroup file nor read the kernel log
  nor call into the module loader, with or without the Protect* directives that
  also say so (the handler's unit dropped four of them for their cost);
- network: AF_UNIX always (store, journald); AF_NETLINK and AF_PACKET never.
  AF_INET and AF_INET6 stay in RestrictAddressFamilies because a `redis://`,
  `rediss://` or Sentinel store is reached over TCP, and the unit cannot know
  which store the config names. The rule for a unix-socket store (the package's
  own, the default): nothing in the handler opens an IP socket, and an
  administrator who wants the kernel to enforce that drops in
  `RestrictAddressFamilies=AF_UNIX` (UNIX_ONLY; the last test shows that it
  holds and that the handler still answers). A TCP store may add
  `IPAddressDeny=any` plus `IPAddressAllow=` its servers' and Sentinels'
  addresses, where systemd's BPF firewall works (the unified cgroup hierarchy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from container import Container
from mailhost import smtp_try, without_idle_smtpd
from product import AddressPool, use_policy_socket

pytestmark = pytest.mark.system

PROBE_SOURCE = Path(__file__).with_name("sandbox_probe.py")
PROBE = "/usr/local/lib/pbs-sandbox-probe.py"
ANSWERS = "/run/pbs-sandbox-probe"
STORE_SOCKET = "/run/pbs-store/store.sock"
HANDLER_SOCKET = "pbs-policy.socket"
SERVER_SOCKET = "pbs-policy-server.socket"
HANDLER = "pbs-policy@sandboxprobe.service"
"""An instance of the template: its drop-in (pbs-policy@sandboxprobe.service.d)
applies to that instance only, never to the handlers Postfix starts meanwhile."""
SERVER = "pbs-policy-server.service"
UNITS = {"handler": HANDLER, "server": SERVER}

ALICE_FILE = "/home/alice/readable-by-all"
READER_STATE = "/var/lib/private/pbs-activated"
OTHER_FILES = (ALICE_FILE, "/root/.profile", "/etc/shadow", READER_STATE + "/cursor")
SMTP = ("127.0.0.1", "25")
"""A TCP listener the probe tries to reach: Postfix's smtpd, on every address."""

PSEUDO_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}
"""What PrivateDevices= leaves in /dev: no disk, no kmsg, no mem, no console."""
DEV_DIRECTORIES_AND_LINKS = {
    "char",
    "fd",
    "hugepages",
    "log",
    "mqueue",
    "pts",
    "shm",
    "stderr",
    "stdin",
    "stdout",
}


def drop_in(output: str) -> str:
    """The probe as the unit's ExecStart; everything else stays the unit's."""
    return (
        "[Service]\n"
        "Type=oneshot\n"
        "Restart=no\n"
        "ExecStart=\n"
        f"ExecStart=/usr/bin/python3 -I {PROBE} {STORE_SOCKET} {' '.join(SMTP)}"
        f" {' '.join(OTHER_FILES)}\n"
        "StandardInput=null\n"
        f"StandardOutput=truncate:{output}\n"
    )


def run_probe(ct: Container, unit: str, extra: str = "") -> dict[str, Any]:
    """Start unit with the probe's drop-in (plus extra [Service] lines), return its answers.

    The drop-in lives in /run and is removed before returning, so that the unit
    is the package's again."""
    directory = f"/run/systemd/system/{unit}.d"
    output = f"{ANSWERS}/{unit}.json"
    ct.copy_in(PROBE_SOURCE, PROBE)
    ct.run(["mkdir", "-p", ANSWERS])
    ct.write_file(f"{directory}/sandbox-probe.conf", drop_in(output) + extra)
    try:
        ct.systemctl("daemon-reload")
        started = ct.systemctl("start", unit, check=False)
        text = ct.run(["cat", output], check=False).stdout
        assert text, (
            f"the probe in {unit} said nothing: {started.stderr}"
            + ct.run(["journalctl", "--no-pager", "-n", "20", "-u", unit], check=False).stdout
        )
        answers: dict[str, Any] = json.loads(text)
        return answers
    finally:
        ct.run(["rm", "-rf", directory, output])
        ct.systemctl("daemon-reload")


@pytest.fixture(scope="session")
def sandbox(product_host: Container) -> Iterator[dict[str, dict[str, Any]]]:
    """Each unit's answers ({"handler": ..., "server": ...}), probed once per target."""
    ct = product_host
    ct.run(["install", "-o", "alice", "-m", "644", "/dev/null", ALICE_FILE])
    answers = {"handler": run_probe(ct, HANDLER)}
    use_policy_socket(ct, SERVER_SOCKET)
    try:
        answers["server"] = run_probe(ct, SERVER)
    finally:
        use_policy_socket(ct, HANDLER_SOCKET)
    yield answers
    ct.run(["rm", "-f", ALICE_FILE])


UNIT_IDS = pytest.mark.parametrize("unit", sorted(UNITS))


@UNIT_IDS
def test_it_runs_as_a_dynamic_user(sandbox: dict[str, dict[str, Any]], unit: str) -> None:
    # PrivateUsers= shows its supplementary group pbs-activated as nogroup (65534)
    # inside; the kernel still grants the group's access (the store's socket below).
    assert 61184 <= sandbox[unit]["uid"] <= 65519  # systemd's dynamic range


@UNIT_IDS
def test_it_reads_authorizations_but_cannot_write_one(
    sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    assert sandbox[unit]["read own secret"] == "ok"
    assert sandbox[unit]["store"] == {"auth": "+OK", "get": "$-1", "set": "-NOPERM"}


@UNIT_IDS
def test_it_reads_its_config_but_not_the_readers_or_the_admins_secret(
    sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    assert sandbox[unit]["read config"] == "ok"
    assert sandbox[unit]["read secret"] == {"pbs-journal": "EACCES", "pbs-admin": "EACCES"}


@UNIT_IDS
def test_other_users_files_the_journal_and_other_processes_are_out_of_sight(
    product_host: Container, sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    answers = sandbox[unit]
    assert all(answer != "ok" for answer in answers["read other"].values()), answers["read other"]
    assert answers["journal files readable"] == []
    assert answers["other processes"] == []
    # ...although they are there, and the journal readable by root:
    assert product_host.run(["test", "-f", ALICE_FILE], check=False).returncode == 0
    journals = product_host.run(
        "find /var/log/journal /run/log/journal -name '*.journal'", check=False
    )
    assert journals.stdout.strip()


@UNIT_IDS
def test_it_logs_to_journald(sandbox: dict[str, dict[str, Any]], unit: str) -> None:
    assert sandbox[unit]["journald socket"] == "ok"


@UNIT_IDS
def test_it_can_wake_the_reader(sandbox: dict[str, dict[str, Any]], unit: str) -> None:
    """A relay that waits for a login wakes the reader (issue #22): an empty datagram."""
    assert sandbox[unit]["wake the reader"] == "ok"


@UNIT_IDS
def test_it_writes_only_its_cache_and_its_private_tmp(
    product_host: Container, sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    writable = {path for path, answer in sandbox[unit]["write"].items() if answer == "ok"}
    cache = {"/var/cache/pbs-policy"} if unit == "handler" else set()
    assert writable == {"/tmp", "/var/tmp", "/dev/shm"} | cache, sandbox[unit]["write"]
    # The probe left a file in each of the three: /tmp and /var/tmp are the unit's
    # own (PrivateTmp=), and /dev/shm's, the host's, is emptied of the dynamic
    # user's files when it stops (RemoveIPC=, implied by DynamicUser=).
    left = product_host.run("ls /tmp /var/tmp /dev/shm | grep -c pbs-sandbox-probe", check=False)
    assert left.stdout.strip() == "0"


@UNIT_IDS
def test_it_has_no_capability_and_cannot_gain_one(
    sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    answers = sandbox[unit]
    assert set(answers["capabilities"].values()) == {"0000000000000000"}
    assert answers["no new privileges"] == "1"
    assert answers["setuid 0"] == "EPERM"


@UNIT_IDS
def test_it_can_neither_tune_the_kernel_nor_read_its_log_nor_load_a_module(
    sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    """What ProtectKernelTunables=, ProtectKernelLogs=, ProtectKernelModules= and
    ProtectControlGroups= guard, held whatever the unit says about them: /proc/sys
    is out of sight (ProcSubset=pid), /sys and the cgroup tree are root's (no
    capability, no root), kmsg is no device here, module calls are filtered."""
    answers = sandbox[unit]
    assert answers["kernel tunables"]
    assert "ok" not in answers["kernel tunables"].values(), answers["kernel tunables"]
    assert answers["proc visible"] == []
    assert answers["kernel log"] == "EPERM"
    assert answers["module syscall"] == "EPERM"


@UNIT_IDS
def test_it_sees_only_pseudo_devices(sandbox: dict[str, dict[str, Any]], unit: str) -> None:
    answers = sandbox[unit]
    assert set(answers["open device"].values()) == {"ENOENT"}
    assert PSEUDO_DEVICES <= set(answers["devices"]) <= PSEUDO_DEVICES | DEV_DIRECTORIES_AND_LINKS


@UNIT_IDS
def test_it_opens_unix_and_ip_sockets_but_no_netlink_or_packet_socket(
    sandbox: dict[str, dict[str, Any]], unit: str
) -> None:
    answers = sandbox[unit]
    assert (answers["tcp socket"], answers["tcp6 socket"]) == ("ok", "ok")
    assert (answers["netlink socket"], answers["packet socket"]) == (
        "EAFNOSUPPORT",
        "EAFNOSUPPORT",
    )


UNIX_ONLY = "RestrictAddressFamilies=\nRestrictAddressFamilies=AF_UNIX\n"
"""The drop-in for a unix-socket store (the empty line resets the unit's list, which
more lines would only extend). Not IPAddressDeny=any: that needs systemd's BPF
firewall, which a host without the unified cgroup hierarchy lacks, and there
systemd skips it with a debug message; a seccomp filter holds everywhere."""


def test_with_a_unix_store_tcp_can_be_taken_away_and_the_handler_still_answers(
    product_host: Container, addresses: AddressPool
) -> None:
    """The rule for a unix-socket store: the unit alone lets the probe reach smtpd on
    127.0.0.1:25; with UNIX_ONLY it cannot open an IP socket at all, and the handler
    still has all it needs (a stranger's relay gets the handler's 554, not the 450
    of a handler that failed)."""
    assert run_probe(product_host, HANDLER)["tcp connect"] == "ok"
    denied = run_probe(product_host, HANDLER, UNIX_ONLY)
    assert (denied["tcp socket"], denied["tcp connect"]) == ("EAFNOSUPPORT", "EAFNOSUPPORT")
    assert denied["store"] == {"auth": "+OK", "get": "$-1", "set": "-NOPERM"}
    directory = "/run/systemd/system/pbs-policy@.service.d"
    product_host.write_file(f"{directory}/unix-only.conf", "[Service]\n" + UNIX_ONLY)
    try:
        product_host.systemctl("daemon-reload")
        without_idle_smtpd(product_host)
        assert smtp_try(product_host, addresses.v4(), ["someone@remote.test"])[0][0] == 554
    finally:
        product_host.run(["rm", "-rf", directory])
        product_host.systemctl("daemon-reload")
        without_idle_smtpd(product_host)
