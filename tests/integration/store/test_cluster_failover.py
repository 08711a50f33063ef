"""Issue 6's "Done when": a master dies mid-stream and no login is lost.

Real processes on loopback: a master, two replicas and three redis-sentinels
(tests/cluster.py); a writer that does what the journal reader does (writer.Writer
through Sentinel, its authorize, any exception means "send it again"); and two
handlers under systemd-socket-activate, as two SMTP hosts would run them: one
reading its local replica over a unix socket, one finding servers through the
Sentinels. The master gets SIGKILL while logins stream in.

The cluster is closed as docs/cluster.md says (tests/cluster.py: Acl): default
user off, every component logging in as its own ACL user (`credentials =
"component"`, with the credentials its unit would get), replicas as pbs-replica,
Sentinels as pbs-sentinel, and a password on the Sentinels.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from cluster import Cluster
from journalfiles import JournalWriter, ReaderProcess, dovecot_login
from support import AuditSink, write_config

from pbs_activated.config import Config
from pbs_activated.config.load import load
from pbs_activated.store import acl, keys
from pbs_activated.store.writer import Writer

UNAVAILABLE = "DEFER_IF_REJECT"

WRITE_INTERVAL = 0.01
"""Seconds between two logins of the stream: about a hundred logins a second."""

KILL_AFTER = 1.5
"""Seconds of stream before the master dies."""

AFTER_FAILOVER = 1.5
"""Seconds the stream goes on once the writer has a new master."""

SETTLED = 0.2
"""Handlers are asked only about logins acknowledged at least this long ago: replication
to every replica takes microseconds on loopback, this is a wide margin."""

NEVER_LOGGED_IN = "2001:db8:ffff::1"
ADDRESS = "192.0.2.10"


def login_address(index: int) -> str:
    return f"2001:db8::{index + 1:x}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster", closed=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class WriterThread(threading.Thread):
    """The journal reader's write path: one login after another, each re-sent until acknowledged."""

    def __init__(self, config: Config) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.stop = threading.Event()
        self.acknowledged: list[tuple[str, float]] = []  # (address, when), in stream order
        self.failures: list[tuple[float, str]] = []
        self.expires_ms = keys.now_ms() + 600_000

    def run(self) -> None:
        client = Writer(self.config.redis)
        index = 0
        while not self.stop.is_set():
            address = login_address(index)
            backoff = 0.05
            while True:
                try:
                    client.authorize(address, f"user{index}", self.expires_ms)
                    break
                except Exception as error:  # the reader's rule: not acknowledged, send again
                    self.failures.append((time.monotonic(), f"{type(error).__name__}: {error}"))
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.4)
            self.acknowledged.append((address, time.monotonic()))
            index += 1
            time.sleep(WRITE_INTERVAL)

    def settled(self, now: float) -> list[str]:
        return [address for address, when in list(self.acknowledged) if when <= now - SETTLED]


class Querier(threading.Thread):
    """Postfix on an SMTP host: asks the handler about logins all along, on a kept
    connection that is replaced now and then (a new handler process each time)."""

    def __init__(self, service: PolicyService, writer: WriterThread) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.writer = writer
        self.stop = threading.Event()
        self.answers: list[tuple[float, str, str]] = []  # (when, address, action)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error

    def _run(self) -> None:
        client = self.service.connect()
        asked = 0
        while not self.stop.is_set():
            now = time.monotonic()
            candidates = self.writer.settled(now)
            if asked % 10 == 9 or not candidates:
                address = NEVER_LOGGED_IN
            else:
                address = random.choice(candidates[-50:] if asked % 2 else candidates)
            action = client.ask(client_address=address)
            assert action is not None, "the handler closed the connection"
            self.answers.append((now, address, action.split(" ", 1)[0]))
            asked += 1
            if asked % 25 == 0:
                client.close()
                client = self.service.connect()
            time.sleep(0.005)
        client.close()

    def tally(self, address_filter) -> Counter[str]:  # type: ignore[no-untyped-def]
        return Counter(action for _, address, action in self.answers if address_filter(address))


def handler_config(path: Path, redis_lines: str) -> Path:
    return write_config(path, '[redis]\ntimeout = 1.0\ncredentials = "component"\n' + redis_lines)


def load_as(config: Path, credentials: Path) -> Config:
    """The config as a unit with these systemd credentials loads it."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("CREDENTIALS_DIRECTORY", str(credentials))
        return load(str(config))


class Hosts:
    """The configs of a POP host and of two SMTP hosts, and the SMTP hosts' handlers.

    Every component logs in as its own ACL user, named with its secret as its
    unit names them: the handlers in their environment, the reader in its
    credentials (store-user, store-password). One SMTP host reads its local
    replica over a unix socket; the other finds servers through the Sentinels,
    with their password from a file (`sentinel_password_file`). The POP host's
    reader writes through the Sentinels, with their password from its
    `sentinel-password` credential.
    """

    def __init__(self, cluster: Cluster, directory: Path) -> None:
        assert cluster.acl is not None
        sentinels = ", ".join(f'"{address}"' for address in cluster.sentinel_addresses)
        through_sentinels = f'url = "redis://"\nsentinels = [{sentinels}]\nservice = "pbs"\n'
        self.local_replica = cluster.servers[1]
        self.pop_config = handler_config(directory / "pop-host.toml", through_sentinels)
        self.reader_credentials = cluster.acl.credentials(
            directory / "reader-credentials", acl.JOURNAL_USER
        )
        replica_config = handler_config(
            directory / "smtp-host-replica.toml",
            f'url = "unix://{self.local_replica.socket_path}"\n',
        )
        sentinel_password = cluster.acl.secrets / acl.SENTINEL_CLIENT_SECRET
        sentinel_config = handler_config(
            directory / "smtp-host-sentinels.toml",
            f'{through_sentinels}sentinel_password_file = "{sentinel_password}"\n',
        )
        self.sink = AuditSink(directory / "journal.sock")
        for name in ("replica-handler", "sentinel-handler"):
            (directory / name).mkdir()
        handler = ("env", *cluster.acl.handler_environment())
        self.replica_handler = PolicyService(
            directory / "replica-handler", replica_config, self.sink.path, wrapper=handler
        )
        self.sentinel_handler = PolicyService(
            directory / "sentinel-handler", sentinel_config, self.sink.path, wrapper=handler
        )

    def reader_config(self) -> Config:
        """The POP host's config as pbs-journal.service loads it."""
        return load_as(self.pop_config, self.reader_credentials)

    def stop(self) -> None:
        self.replica_handler.stop()
        self.sentinel_handler.stop()
        self.sink.close()


@pytest.fixture
def hosts(cluster: Cluster, tmp_path: Path) -> Iterator[Hosts]:
    hosts = Hosts(cluster, tmp_path)
    try:
        yield hosts
    finally:
        hosts.stop()


def test_master_killed_mid_stream_loses_no_login(cluster: Cluster, hosts: Hosts) -> None:
    replica_service, sentinel_service = hosts.replica_handler, hosts.sentinel_handler
    writer = WriterThread(hosts.reader_config())
    queriers = [Querier(replica_service, writer), Querier(sentinel_service, writer)]
    old_master = cluster.master()
    try:
        writer.start()
        for querier in queriers:
            querier.start()
        time.sleep(KILL_AFTER)
        acknowledged_before = len(writer.acknowledged)
        old_master.kill()
        killed_at = time.monotonic()
        new_master, promotion_seconds = cluster.wait_for_new_master(old_master)
        deadline = time.monotonic() + 30
        while not [w for _, w in writer.acknowledged[acknowledged_before:] if w > killed_at]:
            assert time.monotonic() < deadline, "the writer never wrote to the new master"
            time.sleep(0.02)
        first_after = min(w for _, w in writer.acknowledged[acknowledged_before:] if w > killed_at)
        time.sleep(AFTER_FAILOVER)
    finally:
        writer.stop.set()
        writer.join(timeout=10)
        for querier in queriers:
            querier.stop.set()
            querier.join(timeout=10)

    for querier in queriers:
        assert querier.error is None, querier.error
    cluster.wait_for_replicas_in_sync()
    written = {keys.client_key(address) for address, _ in writer.acknowledged}
    survivors = [server for server in cluster.servers if server.running]
    lost = {server.name: len(written - server.stored_keys()) for server in survivors}
    gaps = [
        b - a for (_, a), (_, b) in zip(writer.acknowledged, writer.acknowledged[1:], strict=False)
    ]
    figures = {
        "logins acknowledged": len(written),
        "acknowledged before the kill": acknowledged_before,
        "writer: kill to first acknowledged write (s)": round(first_after - killed_at, 3),
        "writer: longest gap between acknowledged writes (s)": round(max(gaps), 3),
        "writer: failed attempts re-sent": len(writer.failures),
        "sentinels: kill to promotion seen (s)": round(promotion_seconds, 3),
        "new master": new_master.name,
        "logins lost per server": lost,
        "replica handler answers": dict(queriers[0].tally(lambda a: a != NEVER_LOGGED_IN)),
        "sentinel handler answers": dict(queriers[1].tally(lambda a: a != NEVER_LOGGED_IN)),
        "never-logged-in answers": dict(
            queriers[0].tally(lambda a: a == NEVER_LOGGED_IN)
            + queriers[1].tally(lambda a: a == NEVER_LOGGED_IN)
        ),
    }
    print("\ncluster failover figures:")
    for name, value in figures.items():
        print(f"  {name}: {value}")

    assert new_master is not old_master
    assert len(survivors) == 2 and new_master in survivors
    assert all(count == 0 for count in lost.values()), lost
    assert acknowledged_before > 20 and len(written) > acknowledged_before + 20
    for querier in queriers:
        # Something was reachable all along (the local replica; replicas named by the
        # Sentinels while the master was down): every acknowledged login got OK.
        logged_in = querier.tally(lambda a: a != NEVER_LOGGED_IN)
        assert set(logged_in) == {"OK"}, logged_in
        assert logged_in["OK"] > 50
        assert set(querier.tally(lambda a: a == NEVER_LOGGED_IN)) == {"DUNNO"}


def test_each_handler_defers_only_while_its_own_servers_are_unreachable(
    cluster: Cluster, hosts: Hosts
) -> None:
    """Frozen processes (SIGSTOP) are the worst case: connections hang instead of failing."""
    Writer(hosts.reader_config().redis).authorize(ADDRESS, "alice", keys.now_ms() + 600_000)
    cluster.wait_for_replicas_in_sync()
    on_replica = hosts.replica_handler.connect()
    through_sentinels = hosts.sentinel_handler.connect()
    assert (
        on_replica.ask(client_address=ADDRESS),
        through_sentinels.ask(client_address=ADDRESS),
    ) == ("OK", "OK")

    hosts.local_replica.pause()
    try:
        assert on_replica.ask(client_address=ADDRESS).startswith(UNAVAILABLE)
        assert through_sentinels.ask(client_address=ADDRESS) == "OK"
    finally:
        hosts.local_replica.resume()
    assert on_replica.ask(client_address=ADDRESS) == "OK"

    for sentinel in cluster.sentinels:
        sentinel.pause()
    try:
        fresh = hosts.sentinel_handler.connect()  # a new handler must ask the Sentinels
        assert fresh.ask(client_address=ADDRESS).startswith(UNAVAILABLE)
        assert on_replica.ask(client_address=ADDRESS) == "OK"
        fresh.close()
    finally:
        for sentinel in cluster.sentinels:
            sentinel.resume()
    fresh = hosts.sentinel_handler.connect()
    assert fresh.ask(client_address=ADDRESS) == "OK"
    for client in (fresh, on_replica, through_sentinels):
        client.close()


def test_the_journal_reader_loses_no_login_when_the_master_dies(
    cluster: Cluster, hosts: Hosts, tmp_path: Path
) -> None:
    """The same failover under the real reader (`pbs-activated journal`), following a
    journal that Dovecot's unit writes logins into as the master dies."""
    journal = tmp_path / "journal"
    writer = JournalWriter(journal / "dovecot.journal")
    sink = AuditSink(tmp_path / "reader-audit.sock")
    (tmp_path / "reader").mkdir()
    reader = ReaderProcess(
        tmp_path / "reader",
        hosts.pop_config,
        journal,
        sink.path,
        environment={"CREDENTIALS_DIRECTORY": str(hosts.reader_credentials)},
    )
    logged_in: list[str] = []
    stop = threading.Event()

    def log_in() -> None:
        """Dovecot's unit logging a POP3 login every WRITE_INTERVAL, until told to stop."""
        while not stop.is_set():
            address = f"198.18.{len(logged_in) // 250}.{len(logged_in) % 250 + 1}"
            writer.append(dovecot_login(address, user=f"user{len(logged_in)}"))
            logged_in.append(address)
            time.sleep(WRITE_INTERVAL)

    dovecot = threading.Thread(target=log_in, daemon=True)
    old_master = cluster.master()
    try:
        reader.start()
        dovecot.start()
        time.sleep(KILL_AFTER)
        written_before_kill = len(old_master.stored_keys())
        old_master.kill()
        killed_at = time.monotonic()
        cluster.wait_for_new_master(old_master)
        time.sleep(AFTER_FAILOVER)
        stop.set()
        dovecot.join(timeout=10)
        new_master = cluster.master()
        expected = {keys.client_key(address) for address in logged_in}
        deadline = time.monotonic() + 30
        while expected - new_master.stored_keys():
            assert time.monotonic() < deadline, reader.output()
            time.sleep(0.1)
        caught_up = time.monotonic() - killed_at
        cluster.wait_for_replicas_in_sync()
        audited = [e for e in sink.collect(timeout=0.5) if e.get("PBS_EVENT") == "login"]
        assert reader.notify is not None
        statuses = [m.get("STATUS", "") for m in reader.notify.messages]
    finally:
        stop.set()
        reader.stop()
        writer.close()
        sink.close()

    survivors = [server for server in cluster.servers if server.running]
    lost = {server.name: len(expected - server.stored_keys()) for server in survivors}
    print("\njournal reader failover figures:")
    print(
        f"  logins in the journal: {len(logged_in)}, written before the kill: {written_before_kill}"
    )
    print(f"  reader: {' / '.join(re.findall(r'Redis is back after [0-9.]+ s', reader.output()))}")
    print(f"  kill to every login on the new master (s): {caught_up:.3f}")
    print(f"  logins lost per server: {lost}")
    print(f"  login audit entries: {len(audited)}")
    assert all(count == 0 for count in lost.values()), lost
    assert "Redis is back after" in reader.output(), "\n".join(statuses)
    assert sorted(e["PBS_CLIENT_ADDRESS"] for e in audited) == sorted(logged_in)
