"""Two hosts joined by a wire: a login on the POP host lets its client relay through
the SMTP host.

Two network namespaces this test creates (and deletes), joined by a veth pair with
addresses of their own, stand for two machines:

- the POP host, 198.51.100.1: the Redis master, and the reader following a journal
  in which Dovecot's unit logged a POP3 login (a real journal file, written by
  systemd-journal-remote with the trusted fields journald would set);
- the SMTP host, 198.51.100.2: a Redis replica of the master across the wire, and
  the handler under systemd-socket-activate reading that replica over its unix
  socket, asked as Postfix would ask.

Then the wire is cut: the SMTP host keeps answering from its replica, and a login
made meanwhile is neither lost nor counted done before the replica has it.

Both servers are set up as docs/cluster.md says for hosts that differ: TLS on
the wire (replication included), the ACL file of `pbs-activated store-acl`,
the replica logging in as pbs-replica (docs/examples/cluster-redis.conf), and
each component as its own ACL user, named as its unit names it.
Needs root (it is: the tests run as root on the CI's Debian).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from cluster import Acl, Server, Tls
from journalfiles import JournalWriter, dovecot_login
from support import PYTHON, REPO, AuditSink, write_config

from pbs_activated.store import acl, keys

POP_ADDRESS = "198.51.100.1"
SMTP_ADDRESS = "198.51.100.2"
PREFIX_LENGTH = 24
REDIS_PORT = 6379
CLIENT = "203.0.113.7"
"""The mail client: logs in over POP3 on the POP host, then relays through the SMTP host."""

SECOND_CLIENT = "203.0.113.8"


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


class Hosts:
    """Two network namespaces joined by a veth pair: `pop` and `smtp`."""

    def __init__(self) -> None:
        suffix = f"{os.getpid() % 100000}"
        self.pop = f"pbs-pop-{suffix}"
        self.smtp = f"pbs-smtp-{suffix}"
        self.pop_link = f"pbsp{suffix}"
        self.smtp_link = f"pbss{suffix}"

    def create(self) -> None:
        for namespace in (self.pop, self.smtp):
            run("ip", "netns", "add", namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run(
            "ip",
            "link",
            "add",
            self.pop_link,
            "netns",
            self.pop,
            "type",
            "veth",
            "peer",
            "name",
            self.smtp_link,
            "netns",
            self.smtp,
        )
        for namespace, link, address in (
            (self.pop, self.pop_link, POP_ADDRESS),
            (self.smtp, self.smtp_link, SMTP_ADDRESS),
        ):
            run("ip", "-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", link)
            run("ip", "-n", namespace, "link", "set", link, "up")

    def delete(self) -> None:
        for namespace in (self.pop, self.smtp):  # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

    def on(self, namespace: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", namespace)

    def cut(self) -> None:
        run("ip", "-n", self.pop, "link", "set", self.pop_link, "down")

    def mend(self) -> None:
        run("ip", "-n", self.pop, "link", "set", self.pop_link, "up")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    hosts = Hosts()
    try:
        hosts.create()
    except subprocess.CalledProcessError as error:
        hosts.delete()
        pytest.skip(f"cannot create network namespaces here: {error.stderr.decode().strip()}")
    try:
        yield hosts
    finally:
        hosts.delete()


def wait_for(condition, timeout: float = 10):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def logins_audited(sink: AuditSink, user: str) -> list[dict[str, str]]:
    """The reader's audit entries for `user`'s logins (written once Redis confirmed them)."""
    return [
        entry
        for entry in sink.collect(timeout=0)
        if entry.get("PBS_EVENT") == "login" and entry.get("PBS_USER") == user
    ]


def test_a_login_on_the_pop_host_lets_its_client_relay_through_the_smtp_host(
    hosts: Hosts, tmp_path: Path
) -> None:
    closed = Acl(tmp_path / "acl")
    tls = Tls(tmp_path / "tls", addresses=("127.0.0.1", POP_ADDRESS, SMTP_ADDRESS))
    reader_credentials = closed.credentials(tmp_path / "reader-credentials", acl.JOURNAL_USER)

    # The POP host: the master, on the wire and on its own loopback.
    master = Server(
        tmp_path,
        "pop-redis",
        tls=tls,
        port=REDIS_PORT,
        bind=(POP_ADDRESS, "127.0.0.1"),
        prefix=hosts.on(hosts.pop),
        closed=closed,
    )
    # The SMTP host: a replica of the master across the wire.
    replica = Server(
        tmp_path,
        "smtp-redis",
        tls=tls,
        port=REDIS_PORT,
        bind=(SMTP_ADDRESS, "127.0.0.1"),
        prefix=hosts.on(hosts.smtp),
        closed=closed,
    )
    processes: list[subprocess.Popen[bytes]] = []
    sink = AuditSink(tmp_path / "journal.sock")
    handler: PolicyService | None = None
    writer: JournalWriter | None = None
    try:
        master.start()
        replica.start(replica_of=(POP_ADDRESS, REDIS_PORT))
        assert wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up")

        # The POP host's reader: the master on the local loopback, WAIT across the wire.
        journal = tmp_path / "journal"
        writer = JournalWriter(journal / "dovecot.journal")
        pop_config = write_config(
            tmp_path / "pop-host.toml",
            f'[redis]\nurl = "rediss://127.0.0.1:{REDIS_PORT}/0"\ncredentials = "component"\n'
            f'tls_ca_file = "{tls.ca_file}"\ntls_cert_file = "{tls.client_cert}"\n'
            f'tls_key_file = "{tls.client_key}"\n',
        )
        state = tmp_path / "state"
        state.mkdir()
        environment = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            STATE_DIRECTORY=str(state),
            CREDENTIALS_DIRECTORY=str(reader_credentials),
            PBS_ACTIVATED_JOURNAL_SOCKET=str(sink.path),
        )
        with (tmp_path / "reader.log").open("ab") as log:
            processes.append(
                subprocess.Popen(
                    [
                        *hosts.on(hosts.pop),
                        PYTHON,
                        "-m",
                        "pbs_activated",
                        "--config",
                        str(pop_config),
                        "journal",
                        "--directory",
                        str(journal),
                    ],
                    env=environment,
                    stdout=log,
                    stderr=log,
                )
            )

        # The SMTP host's handler, reading the local replica over its unix socket.
        smtp_config = write_config(
            tmp_path / "smtp-host.toml",
            f'[redis]\nurl = "unix://{replica.socket_path}"\ncredentials = "component"\n',
        )
        (tmp_path / "smtp").mkdir()
        handler = PolicyService(
            tmp_path / "smtp",
            smtp_config,
            sink.path,
            wrapper=(*hosts.on(hosts.smtp), "env", *closed.handler_environment()),
        )
        postfix = handler.connect()
        assert postfix.ask(client_address=CLIENT) == "DUNNO"

        writer.append(dovecot_login(CLIENT, user="alice"))
        assert wait_for(lambda: postfix.ask(client_address=CLIENT) == "OK"), (
            tmp_path / "reader.log"
        ).read_text()
        assert replica.client().get(keys.client_key(CLIENT)) == "alice"

        # The wire is cut: the SMTP host answers from its replica alone...
        hosts.cut()
        writer.append(dovecot_login(SECOND_CLIENT, user="bob"))
        time.sleep(2)
        assert postfix.ask(client_address=CLIENT) == "OK"
        # ...the new login waits on the POP host: the master has it, but no replica
        # confirmed it, so the reader has not counted it (no audit entry yet)...
        assert postfix.ask(client_address=SECOND_CLIENT) == "DUNNO"
        assert master.client().get(keys.client_key(SECOND_CLIENT)) == "bob"
        assert not logins_audited(sink, "bob")
        # ...and crosses once the wire is back, counted once, as granted.
        hosts.mend()
        assert wait_for(lambda: postfix.ask(client_address=SECOND_CLIENT) == "OK", timeout=30)
        assert wait_for(lambda: len(logins_audited(sink, "bob")) == 1)
        assert len(logins_audited(sink, "alice")) == 1
        postfix.close()
    finally:
        if handler is not None:
            handler.stop()
        if writer is not None:
            writer.close()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        replica.kill()
        master.kill()
        sink.close()
