"""The package's own store in a booted Debian: closed to local users, durable, never full.

Issue #11's question, asked of the installed package: who can make Postfix
relay? Here an unprivileged local user (`nobody`) tries every door (the
store's socket, the admin socket, the CLI) and Postfix still refuses to relay
for the address; root and a member of group pbs-activated-admin can
administer; each service's own credential can do only its own job. Then the
store keeps what it acknowledged through a restart and a SIGKILL, and a full
store makes the reader wait, losing no login.
"""

from __future__ import annotations

import time

import pytest
from container import Container
from mailhost import pop3_login, smtp_try
from product import AddressPool, authorizations, wait_active, wait_authorized

pytestmark = pytest.mark.system

STORE_SOCKET = "/run/pbs-store/store.sock"
ADMIN_SOCKET = "/run/pbs-store-admin.sock"
SECRETS = "/etc/pbs-activated/secrets"
STORE_CONF = "/etc/pbs-activated/store.conf"
REMOTE = ["someone@remote.test"]
DENIED = (
    "pbs-activated: permission denied: run as root or as a member of group pbs-activated-admin\n"
)

PROBE = r"""
import socket, sys
path, commands = sys.argv[1], " ".join(sys.argv[2:]).split(" -- ")
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(path)
except OSError as error:
    print("connect:", error.strerror)
    sys.exit(0)
def encode(words):
    parts = [b"*%d\r\n" % len(words)]
    parts += [b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words]
    return b"".join(parts)
s.sendall(b"".join(encode(command.split()) for command in commands))
replies = b""
try:
    while replies.count(b"\r\n") < len(commands):
        chunk = s.recv(65536)
        if not chunk:
            break
        replies += chunk
except OSError:
    pass
for line in replies.decode(errors="replace").split("\r\n"):
    if line[:1] in ("+", "-", ":"):
        print(line)
"""
"""Speaks RESP with Python alone (trixie's valkey has no redis-cli): connects to a
unix socket, sends commands separated by ` -- `, prints the status lines of the
replies, or `connect: <error>`."""


def probe(ct: Container, path: str, commands: str, user: str | None = None) -> str:
    return ct.run(["python3", "-c", PROBE, path, *commands.split()], user=user).stdout.strip()


def secret(ct: Container, user: str) -> str:
    return ct.run(["cat", f"{SECRETS}/{user}"]).stdout.strip()


@pytest.mark.smoke
def test_an_unprivileged_user_cannot_even_connect_to_the_store(product_host: Container) -> None:
    for path in (STORE_SOCKET, ADMIN_SOCKET):
        assert probe(product_host, path, "PING", user="nobody") == "connect: Permission denied"


@pytest.mark.smoke
def test_the_store_has_no_tcp_listener(product_host: Container) -> None:
    pid = product_host.run(["systemctl", "show", "-P", "MainPID", "pbs-store"]).stdout.strip()
    listening = product_host.run(["nsenter", "-t", pid, "-n", "ss", "-Hltnu"]).stdout
    assert listening.strip() == ""
    assert product_host.run(["ss", "-Hltnp"]).stdout.count("pbs-store") == 0


@pytest.mark.smoke
def test_the_secrets_are_roots_but_the_handlers_and_the_admins(product_host: Container) -> None:
    listing = product_host.run(f"stat -c '%n %U %G %a' {SECRETS} {SECRETS}/*").stdout.splitlines()
    assert sorted(listing) == [
        f"{SECRETS} root root 755",
        f"{SECRETS}/pbs-admin root pbs-activated-admin 640",
        f"{SECRETS}/pbs-journal root root 600",
        f"{SECRETS}/pbs-policy root pbs-activated 640",
    ]


@pytest.mark.smoke
@pytest.mark.parametrize(
    "arguments",
    [["grant", "{address}"], ["revoke", "{address}"], ["list"], ["check", "{address}"]],
    ids=["grant", "revoke", "list", "check"],
)
def test_the_cli_refuses_an_unprivileged_user_and_postfix_still_refuses_the_relay(
    product_host: Container,
    addresses: AddressPool,
    arguments: list[str],
) -> None:
    address = addresses.v4()
    command = ["pbs-activated", *(word.format(address=address) for word in arguments)]
    result = product_host.run(command, user="nobody", check=False)
    assert (result.returncode, result.stderr, result.stdout) == (77, DENIED, "")
    assert address not in authorizations(product_host)
    assert smtp_try(product_host, address, REMOTE)[0][0] == 554


def test_a_member_of_the_admin_group_administers(
    product_host: Container, addresses: AddressPool
) -> None:
    address = addresses.v4()
    if product_host.run(["id", "carol"], check=False).returncode != 0:
        product_host.run(["useradd", "--no-create-home", "carol"])
        product_host.run(["adduser", "--quiet", "carol", "pbs-activated-admin"])
    product_host.run(["pbs-activated", "grant", address, "--user", "carol"], user="carol")
    assert f"{address}\tcarol\t" in product_host.run(["pbs-activated", "list"], user="carol").stdout
    assert smtp_try(product_host, address, REMOTE)[0][0] == 250
    product_host.run(["pbs-activated", "revoke", address], user="carol")
    assert smtp_try(product_host, address, REMOTE)[0][0] == 554


def test_root_administers(product_host: Container, addresses: AddressPool) -> None:
    address = addresses.v4()
    product_host.run(["pbs-activated", "grant", address])
    assert product_host.run(["pbs-activated", "check", address]).stdout == "OK\n"
    product_host.run(["pbs-activated", "revoke", address])


def test_the_handlers_credential_reads_but_cannot_write(product_host: Container) -> None:
    login = f"AUTH pbs-policy {secret(product_host, 'pbs-policy')}"
    replies = probe(
        product_host,
        STORE_SOCKET,
        f"{login} -- GET pbs:client:192.0.2.200 -- SET pbs:client:192.0.2.200 mallory"
        " -- PEXPIREAT pbs:client:192.0.2.200 99999999999999 -- DEL pbs:client:192.0.2.200",
    ).splitlines()
    assert replies[0] == "+OK"
    assert [reply.split()[0] for reply in replies[1:]] == ["-NOPERM", "-NOPERM", "-NOPERM"]


def test_the_readers_credential_cannot_read_or_run_admin_commands(
    product_host: Container,
) -> None:
    login = f"AUTH pbs-journal {secret(product_host, 'pbs-journal')}"
    replies = probe(
        product_host,
        STORE_SOCKET,
        f"{login} -- GET pbs:client:192.0.2.200 -- SET elsewhere x -- FLUSHALL"
        " -- CONFIG SET maxmemory 1 -- KEYS *",
    ).splitlines()
    assert replies[0] == "+OK"
    assert [reply.split()[0] for reply in replies[1:]] == ["-NOPERM"] * 5


def test_no_password_and_the_default_user_get_nothing(product_host: Container) -> None:
    # One connection each: an unauthenticated client's first error may end it.
    assert probe(product_host, STORE_SOCKET, "GET pbs:client:192.0.2.200").startswith("-NOAUTH")
    assert probe(product_host, STORE_SOCKET, "AUTH default x").startswith("-WRONGPASS")


def logged_in(ct: Container, address: str) -> None:
    assert pop3_login(ct, address, "alice", "secret")["ok"]
    assert wait_authorized(ct, address) == "alice"


def store_restarted(ct: Container, *command: str) -> None:
    ct.run(list(command))
    time.sleep(0.5)  # Restart=always waits RestartSec=1s after a kill
    wait_active(ct, "pbs-store.service", "pbs-journal.service")


def test_authorizations_survive_a_restart_of_the_store(
    product_host: Container, addresses: AddressPool
) -> None:
    address = addresses.v4()
    logged_in(product_host, address)
    store_restarted(product_host, "systemctl", "restart", "pbs-store.service")
    assert address in authorizations(product_host)
    assert smtp_try(product_host, address, REMOTE)[0][0] == 250


def test_an_acknowledged_login_survives_a_sigkill_of_the_store(
    product_host: Container, addresses: AddressPool
) -> None:
    """appendfsync always: what the reader was told is written is on disk."""
    address = addresses.v4()
    logged_in(product_host, address)
    store_restarted(
        product_host, "systemctl", "kill", "--kill-who=main", "-s", "KILL", "pbs-store.service"
    )
    deadline = time.monotonic() + 10
    while address not in authorizations_or_none(product_host):
        assert time.monotonic() < deadline, "the store did not come back"
        time.sleep(0.2)
    assert smtp_try(product_host, address, REMOTE)[0][0] == 250


def authorizations_or_none(ct: Container) -> dict[str, tuple[str, int]]:
    """`pbs-activated list`, or nothing while the store is still starting."""
    try:
        return authorizations(ct)
    except Exception:
        return {}


def test_a_full_store_makes_the_reader_wait_and_loses_no_login(
    product_host: Container,
    addresses: AddressPool,
) -> None:
    shipped = product_host.run(["cat", STORE_CONF]).stdout
    product_host.write_file(STORE_CONF, shipped.replace("maxmemory 64mb", "maxmemory 100kb"))
    try:
        store_restarted(product_host, "systemctl", "restart", "pbs-store.service")
        address = addresses.v4()
        assert pop3_login(product_host, address, "alice", "secret")["ok"]
        deadline = time.monotonic() + 10
        status = ""
        while "command not allowed when used memory" not in status:  # redis-py 4.3 and 6.1
            assert time.monotonic() < deadline, f"the reader never met the full store: {status}"
            time.sleep(0.2)
            status = product_host.run(
                ["systemctl", "show", "-P", "StatusText", "pbs-journal"]
            ).stdout
        assert "Waiting for Redis" in status
        assert address not in authorizations(product_host)
    finally:
        product_host.write_file(STORE_CONF, shipped)
        store_restarted(product_host, "systemctl", "restart", "pbs-store.service")
    assert wait_authorized(product_host, address) == "alice"
    assert smtp_try(product_host, address, REMOTE)[0][0] == 250
