"""Run inside a policy unit's sandbox: try each door, print one JSON object of answers.

test_sandbox.py starts this as the ExecStart of a policy unit (a drop-in that
changes only ExecStart, Type and the standard streams), so it runs as the unit's
user, with the unit's namespaces, mounts, capabilities, seccomp filter and
address families. Each answer is "ok" or the name of the errno (or error reply)
that stopped it, so the test reads what the sandbox allowed rather than why.
Standard library only: it runs under the container's python3 (3.11 or 3.13).

    python3 -I sandbox_probe.py STORE_SOCKET TCP_HOST TCP_PORT OTHER_FILE...
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Callable

SECRETS = "/etc/pbs-activated/secrets"
CONFIG = "/etc/pbs-activated/pbs-activated.toml"
PROBE_KEY = "pbs:client:192.0.2.254"
"""An address no test authorizes: the probe's SET must fail, its GET find nothing."""
KERNEL_FILES = (
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/fs/cgroup/unified/cgroup.procs",
    "/sys/fs/cgroup/cgroup.procs",
    "/sys/module/printk/parameters/time",
)
"""Files under /sys a process with the right to write them would change the host with."""
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
WRITABLE_CANDIDATES = (
    "/etc",
    "/usr/local",
    "/var/lib",
    "/var/spool/postfix/private",
    "/var/log",
    "/run",
    "/run/pbs-store",
    "/dev/shm",
    "/tmp",
    "/var/tmp",
    "/var/cache/pbs-policy",
)

VANISHING = ("/tmp", "/var/tmp", "/dev/shm")
"""PrivateTmp='s own directories, and POSIX shared memory, which RemoveIPC= empties."""


def attempt(action: Callable[[], object]) -> str:
    """ "ok", or the errno's name of the OSError that action raised."""
    try:
        action()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    return "ok"


def read(path: str) -> Callable[[], bytes]:
    def reading() -> bytes:
        with open(path, "rb") as file:
            return file.read(1)

    return reading


def write_in(directory: str) -> Callable[[], None]:
    def writing() -> None:
        path = os.path.join(directory, f"pbs-sandbox-probe-{os.getpid()}")
        with open(path, "x") as file:
            file.write("probe\n")
        # Left where it should vanish with the unit, so that the test can look for
        # it outside; removed elsewhere.
        if directory not in VANISHING:
            os.unlink(path)

    return writing


def resp(*words: str) -> bytes:
    """One command in Redis's wire format."""
    encoded = [word.encode() for word in words]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded
    )


def store_replies(store_socket: str, password_file: str) -> dict[str, str]:
    """AUTH as the unit's ACL user, then GET and SET an authorization: the first line
    of each reply ("+OK", "$-1", "-NOPERM ..."), or why the connection failed."""
    try:
        with open(password_file) as file:
            password = file.read().strip()
        connection = socket.socket(socket.AF_UNIX)
        connection.settimeout(5)
        connection.connect(store_socket)
    except OSError as error:
        reason = errno.errorcode.get(error.errno or 0, str(error))
        return {"auth": reason, "get": reason, "set": reason}
    user = os.environ.get("PBS_ACTIVATED_STORE_USER", "")
    commands = {
        "auth": resp("AUTH", user, password),
        "get": resp("GET", PROBE_KEY),
        "set": resp("SET", PROBE_KEY, "probe", "PX", "1000"),
    }
    connection.sendall(b"".join(commands.values()))
    received = b""
    while received.count(b"\r\n") < len(commands):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    lines = [line for line in received.decode().split("\r\n") if line]
    return {name: line.split(" ")[0] for name, line in zip(commands, lines, strict=False)}


def tcp_connect(host: str, port: int) -> Callable[[], None]:
    def connecting() -> None:
        with socket.create_connection((host, port), timeout=3):
            pass

    return connecting


def open_socket(family: int, kind: int) -> Callable[[], None]:
    def opening() -> None:
        socket.socket(family, kind).close()

    return opening


def kernel_write(path: str) -> Callable[[], None]:
    """Open a kernel tunable (or a cgroup file) for writing, writing nothing."""

    def opening() -> None:
        os.close(os.open(path, os.O_WRONLY))

    return opening


def libc_call(name: str, *arguments: int) -> Callable[[], None]:
    """A libc call that fails with -1 and errno, as an OSError."""

    def calling() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, name)(*arguments) == -1:
            raise OSError(ctypes.get_errno(), name)

    return calling


def journal_files() -> list[str]:
    """Every journal file this process can see (listing is allowed to fail)."""
    found = []
    for top in ("/var/log/journal", "/run/log/journal"):
        for directory, _, names in os.walk(top):
            found += [os.path.join(directory, name) for name in names if ".journal" in name]
    return found


def process_status() -> dict[str, str]:
    with open("/proc/self/status") as file:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)
    return fields


def answers(
    store_socket: str, tcp_host: str, tcp_port: int, others: list[str]
) -> dict[str, object]:
    """What this process may do: the keys are the doors, see test_sandbox.py."""
    status = process_status()
    password_file = os.environ.get("PBS_ACTIVATED_STORE_PASSWORD_FILE", "")
    found: dict[str, object] = {
        "uid": os.getuid(),
        "groups": sorted(os.getgroups()),
        "read own secret": attempt(read(password_file)),
        "read config": attempt(read(CONFIG)),
        "store": store_replies(store_socket, password_file),
        "read secret": {
            name: attempt(read(os.path.join(SECRETS, name)))
            for name in ("pbs-journal", "pbs-admin")
        },
        "read other": {path: attempt(read(path)) for path in others},
        "journal files readable": [path for path in journal_files() if attempt(read(path)) == "ok"],
        "journald socket": attempt(
            lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).connect(
                "/run/systemd/journal/socket"
            )
        ),
        # The reader's wake-up socket (pbs_activated/wakeup.py): group pbs-activated may send.
        "wake the reader": attempt(
            lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(
                b"", "/run/pbs-journal/wake"
            )
        ),
        "other processes": sorted(
            name for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()
        ),
        "write": {directory: attempt(write_in(directory)) for directory in WRITABLE_CANDIDATES},
        "capabilities": {field: status.get(field, "") for field in CAPABILITY_FIELDS},
        "no new privileges": status.get("NoNewPrivs", ""),
        "setuid 0": attempt(lambda: os.setuid(0)),
        "devices": sorted(os.listdir("/dev")),
        "open device": {
            path: attempt(read(path)) for path in ("/dev/kmsg", "/dev/mem", "/dev/port")
        },
        "kernel tunables": {
            path: attempt(kernel_write(path)) for path in KERNEL_FILES if os.path.exists(path)
        },
        "proc visible": [path for path in ("/proc/sys", "/proc/kmsg") if os.path.exists(path)],
        # klogctl(SYSLOG_ACTION_SIZE_BUFFER): the kernel log's size, refused to a process
        # without CAP_SYSLOG where dmesg_restrict is set, and by a seccomp filter.
        "kernel log": attempt(libc_call("klogctl", 10, 0, 0)),
        # delete_module(NULL, 0): any answer but EPERM means the call reached the kernel.
        "module syscall": attempt(libc_call("delete_module", 0, 0)),
        "tcp socket": attempt(open_socket(socket.AF_INET, socket.SOCK_STREAM)),
        "tcp6 socket": attempt(open_socket(socket.AF_INET6, socket.SOCK_STREAM)),
        "tcp connect": attempt(tcp_connect(tcp_host, tcp_port)),
        "netlink socket": attempt(
            open_socket(socket.AF_NETLINK, socket.SOCK_RAW)  # type: ignore[attr-defined]
        ),
        "packet socket": attempt(
            open_socket(socket.AF_PACKET, socket.SOCK_RAW)  # type: ignore[attr-defined]
        ),
    }
    return found


def main() -> None:
    store_socket, tcp_host, tcp_port, *others = sys.argv[1:]
    json.dump(answers(store_socket, tcp_host, int(tcp_port), others), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
