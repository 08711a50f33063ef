"""The policy server as Postfix meets it: one process for every connection of an
Accept=no socket, under systemd-socket-activate, answering from a real redis-server.

The server's own promises (pbs_activated/server.py) are what is checked here:
every request on every connection answered, the requests of a round looked up
with one Redis command, a broken peer or a broken Redis costing the others no
more than the documented timeouts, idle connections closed and an idle server
gone.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from activation import PolicyClient, ServerService, encode_request
from cluster import free_port
from support import PYTHON, REPO, AuditSink, RedisServer, run_cli, write_config

from pbs_activated.addresses import normalize
from pbs_activated.config import RedisSettings, defaults
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreUnavailable, keys
from pbs_activated.store.lookup import Lookup

TIMEOUT = 0.5
"""`[redis] timeout` of these tests: short, so that a hung Redis costs the suite little."""

MARGIN = 0.5

DROP_WITHIN = 5.0
"""The most a connection that does not read its answers may hold the others up (the
server drops it as soon as its buffer is full, without waiting)."""
"""What a loaded two-CPU test machine may add to a documented bound."""

UNAVAILABLE = defaults.ACTION_UNAVAILABLE
GRANTED = "192.0.2.10"
UNKNOWN = "192.0.2.99"

Entry = dict[str, str]


def server_config(
    directory: Path, redis_url: str, timeout: float = TIMEOUT, policy: str = ""
) -> Path:
    """A config for the server: the given Redis with a short timeout, and `policy` lines."""
    return write_config(
        directory / "server.toml",
        f'[redis]\nurl = "{redis_url}"\ntimeout = {timeout}\n[policy]\n{policy}',
    )


def grant(config: Path, address: str, *options: str) -> None:
    run_cli("grant", address, *options, config=config)


def entries_where(
    sink: AuditSink, wanted: Callable[[Entry], bool], count: int = 1, timeout: float = 5
) -> list[Entry]:
    """The audit entries `wanted` picks, once there are `count` of them (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [entry for entry in list(sink.entries) if wanted(entry)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def is_decision(entry: Entry) -> bool:
    return "PBS_ACTION" in entry


def pause(pid: int) -> None:
    """SIGSTOP a process and wait until it is stopped: kill() only queues the signal."""
    os.kill(pid, signal.SIGSTOP)
    stat = Path(f"/proc/{pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.001)


def stop_and_send(service: ServerService, sends: list[tuple[PolicyClient, bytes]]) -> None:
    """Send while the server is stopped, so that it finds everything in one round."""
    pause(service.pid)
    try:
        for client, data in sends:
            client.send(data)
    finally:
        os.kill(service.pid, signal.SIGCONT)


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer) -> Path:
    return server_config(tmp_path, redis_server.url)


@pytest.fixture
def service(tmp_path: Path, config: Path, audit_sink: AuditSink) -> Iterator[ServerService]:
    """The server listening on the test's socket, with the test's Redis and audit sink."""
    with ServerService(tmp_path, config, audit_sink.path) as running:
        yield running


# Every request on every connection is answered, without a process per connection


def test_many_connections_with_many_requests_are_all_answered_without_a_process_each(
    service: ServerService, config: Path
) -> None:
    grant(config, GRANTED, "--user", "alice")
    clients = [service.connect() for _ in range(10)]
    start = threading.Barrier(len(clients))

    def converse(index: int) -> list[str | None]:
        start.wait()
        addresses = [GRANTED if (index + n) % 2 else UNKNOWN for n in range(20)]
        return [clients[index].ask(client_address=address) for address in addresses]

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(converse, range(len(clients))))
    for index, answered in enumerate(answers):
        assert answered == ["OK" if (index + n) % 2 else "DUNNO" for n in range(20)]
    assert service.serving()
    assert service.children() == []  # one process, not one per connection


def test_pipelined_requests_in_one_write_get_answers_in_order(
    service: ServerService, config: Path
) -> None:
    grant(config, GRANTED)
    client = service.connect()
    addresses = [GRANTED, UNKNOWN, GRANTED, "2001:db8::99", GRANTED]
    client.send(b"".join(encode_request(client_address=a) for a in addresses))
    assert [client.reply() for _ in addresses] == ["OK", "DUNNO", "OK", "DUNNO", "OK"]
    assert client.ask() == "OK"


def test_requests_sent_byte_by_byte_on_two_connections_are_each_answered_once(
    service: ServerService, config: Path
) -> None:
    grant(config, GRANTED)
    granted, unknown = service.connect(), service.connect()
    first, second = encode_request(), encode_request(client_address=UNKNOWN)
    for index in range(max(len(first), len(second))):
        granted.send(first[index : index + 1])
        unknown.send(second[index : index + 1])
        time.sleep(0.0005)
    assert granted.reply() == "OK"
    assert unknown.reply() == "DUNNO"
    # A second answer to the split request would come out here instead.
    assert granted.ask(client_address=UNKNOWN) == "DUNNO"
    assert unknown.ask() == "OK"


def test_only_rcpt_decides(service: ServerService, config: Path) -> None:
    grant(config, GRANTED)
    client = service.connect()
    states = ["CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN"]
    answers = {state: client.ask(protocol_state=state) for state in states}
    assert answers == {state: "OK" if state == "RCPT" else "DUNNO" for state in states}


def test_ipv6_grants_match_any_spelling_and_ipv4_mapped_clients_their_ipv4_grant(
    service: ServerService, config: Path
) -> None:
    grant(config, "2001:0DB8:0:0::10")
    grant(config, GRANTED)
    client = service.connect()
    assert client.ask(client_address="2001:db8::10") == "OK"
    assert client.ask(client_address="2001:DB8:0::0:10") == "OK"
    assert client.ask(client_address="2001:db8::11") == "DUNNO"
    assert client.ask(client_address="::ffff:192.0.2.10") == "OK"
    assert client.ask(client_address="::ffff:192.0.2.11") == "DUNNO"


def test_malformed_requests_are_answered_but_never_ok(service: ServerService, config: Path) -> None:
    grant(config, GRANTED)
    client = service.connect()
    client.send(
        b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
        b"client_address=192.0.2.10\njunk line\n\n"
    )
    assert client.reply() == "DUNNO"
    client.send(b"request=other\nprotocol_state=RCPT\nclient_address=192.0.2.10\n\n")
    assert client.reply() == "DUNNO"
    client.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_state=RCPT\n\n")
    assert client.reply() == "DUNNO"
    client.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=unknown\n\n")
    assert client.reply() == "DUNNO"
    assert client.ask() == "OK"


def test_answers_come_before_the_close_of_a_half_closed_connection(
    service: ServerService, config: Path
) -> None:
    grant(config, GRANTED)
    client = service.connect()
    client.send(encode_request() + encode_request(client_address=UNKNOWN))
    client.socket.shutdown(socket.SHUT_WR)
    assert [client.reply(), client.reply(), client.reply()] == ["OK", "DUNNO", None]


def test_a_client_leaving_mid_request_or_before_its_answer_costs_the_others_nothing(
    service: ServerService, config: Path, audit_sink: AuditSink
) -> None:
    grant(config, GRANTED)
    bystander = service.connect()
    assert bystander.ask() == "OK"
    truncated = service.connect()
    truncated.send(encode_request()[:40])
    truncated.close()
    impatient = service.connect()
    impatient.send(encode_request() * 20)
    impatient.close()
    warnings = entries_where(audit_sink, lambda e: "middle of a request" in e["MESSAGE"])
    assert [entry["PRIORITY"] for entry in warnings] == ["4"]
    assert bystander.ask() == "OK"
    assert service.serving()


# Requests that arrive together: one lookup, answers first, then the audit entries


MAPPED = "::ffff:192.0.2.10"
"""GRANTED as an IPv4-mapped IPv6 address: another spelling of the same key."""


@pytest.mark.parametrize(
    "rounds",
    [
        pytest.param(
            [
                [a]
                for a in [
                    GRANTED,
                    UNKNOWN,
                    MAPPED,
                    "2001:db8::99",
                    GRANTED,
                    UNKNOWN,
                    MAPPED,
                    GRANTED,
                ]
            ],
            id="one-request-per-connection",  # as Postfix sends them
        ),
        pytest.param([[GRANTED, MAPPED, GRANTED]] * 8, id="one-address-pipelined"),
        pytest.param(
            [[GRANTED, UNKNOWN, MAPPED]] * 8,
            id="addresses-pipelined",
        ),
    ],
)
def test_requests_arriving_together_on_many_connections_ask_redis_once(
    service: ServerService, config: Path, redis_server: RedisServer, rounds: list[list[str]]
) -> None:
    grant(config, GRANTED)
    clients = [service.connect() for _ in rounds]
    for client in clients:  # accepted, and the Redis connection kept, as on a busy server
        assert client.ask() == "OK"
    redis = redis_server.client()
    redis.config_resetstat()
    stop_and_send(
        service,
        [
            (client, b"".join(encode_request(client_address=a) for a in addresses))
            for client, addresses in zip(clients, rounds, strict=True)
        ],
    )
    for client, addresses in zip(clients, rounds, strict=True):
        expected = ["OK" if normalize(a) == GRANTED else "DUNNO" for a in addresses]
        assert [client.reply() for _ in addresses] == expected
    commands = redis.info("commandstats")
    calls = {name: commands.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget")}
    assert sum(calls.values()) == 1, calls
    stats = redis.info("stats")
    # Each address asked once, however many requests on however many connections named it.
    distinct = {normalize(address) for addresses in rounds for address in addresses}
    assert (stats["keyspace_hits"], stats["keyspace_misses"]) == (1, len(distinct) - 1)


def test_each_decision_is_one_audit_entry_with_its_fields(
    service: ServerService, config: Path, audit_sink: AuditSink
) -> None:
    grant(config, GRANTED, "--user", "alice")
    clients = [service.connect() for _ in range(3)]
    for n, client in enumerate(clients):
        client.send(
            encode_request(queue_id=f"Q{n}", recipient=f"r{n}@remote.test")
            + encode_request(client_address=UNKNOWN, queue_id=f"Q{n}")
            + encode_request(protocol_state="DATA", queue_id=f"Q{n}")
        )
    for client in clients:
        assert [client.reply() for _ in range(3)] == ["OK", "DUNNO", "DUNNO"]
    entries = entries_where(audit_sink, is_decision, count=9)
    time.sleep(0.2)
    assert len([entry for entry in audit_sink.entries if is_decision(entry)]) == 9
    for n in range(3):
        ok, unknown, data = [e for e in entries if e.get("PBS_QUEUE_ID") == f"Q{n}"]
        assert (ok["PBS_ACTION"], ok["PBS_USER"], ok["PBS_CLIENT_ADDRESS"]) == (
            "OK",
            "alice",
            GRANTED,
        )
        assert (ok["PBS_RECIPIENT"], ok["PBS_SENDER"]) == (
            f"r{n}@remote.test",
            "alice@example.test",
        )
        assert (ok["PBS_PROTOCOL_STATE"], ok["PBS_REASON"]) == ("RCPT", "recent login")
        assert (ok["PRIORITY"], ok["SYSLOG_IDENTIFIER"]) == ("6", "pbs-activated")
        assert (unknown["PBS_ACTION"], unknown["PBS_REASON"]) == ("DUNNO", "no recent login")
        assert unknown["PBS_CLIENT_ADDRESS"] == UNKNOWN and "PBS_USER" not in unknown
        assert (data["PBS_ACTION"], data["PBS_PROTOCOL_STATE"], data["PRIORITY"]) == (
            "DUNNO",
            "DATA",
            "7",
        )


@pytest.fixture
def stalled_journal(tmp_path: Path) -> Iterator[Path]:
    """A journal socket whose queue is full and stays full, as a stalled journald's is."""
    path = tmp_path / "stalled-journal.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    try:
        while True:
            sender.sendto(b"MESSAGE=filler\n", str(path))
    except BlockingIOError:
        pass
    yield path
    sender.close()
    receiver.close()


def test_a_rounds_answers_are_written_before_its_audit_entries(
    tmp_path: Path, config: Path, stalled_journal: Path
) -> None:
    grant(config, GRANTED)
    with ServerService(tmp_path, config, stalled_journal) as service:
        clients = [service.connect() for _ in range(4)]
        service.wait_until_waiting()
        stop_and_send(service, [(client, encode_request()) for client in clients])
        started = time.monotonic()
        # Each of the round's four entries waits the journal's send timeout (1 s).
        assert [client.reply() for client in clients] == ["OK"] * 4
        assert time.monotonic() - started < defaults.JOURNAL_SEND_TIMEOUT


def test_a_stalled_journal_holds_other_connections_up_no_longer_than_a_handler(
    tmp_path: Path, config: Path, stalled_journal: Path
) -> None:
    grant(config, GRANTED)
    with ServerService(tmp_path, config, stalled_journal) as service:
        busy = [service.connect() for _ in range(6)]
        other = service.connect()
        service.wait_until_waiting()
        stop_and_send(service, [(client, encode_request()) for client in busy])
        assert [client.reply() for client in busy] == ["OK"] * 6
        # A handler waits for its own entries only, at most one send timeout each; here
        # `other` has none, yet waits for the six of the round before.
        other.socket.settimeout(defaults.JOURNAL_SEND_TIMEOUT + MARGIN)
        started = time.monotonic()
        try:
            answer = other.ask()
        except TimeoutError:
            answer = None
        assert answer == "OK", f"no answer within {time.monotonic() - started:.1f} s"


# Limits: an over-long line or request closes its own connection only

TOO_LONG = b"x" * (defaults.MAX_LINE_LENGTH + 1000)
TOO_LARGE = b"".join(
    b"attribute%d=%s\n" % (n, b"v" * (defaults.MAX_LINE_LENGTH // 2))
    for n in range(2 * defaults.MAX_REQUEST_SIZE // defaults.MAX_LINE_LENGTH + 2)
)


@pytest.mark.parametrize(
    ("oversized", "complaint"),
    [
        (
            b"request=smtpd_access_policy\nsender=" + TOO_LONG + b"\n\n",
            f"longer than {defaults.MAX_LINE_LENGTH}",
        ),
        (
            b"request=smtpd_access_policy\n" + TOO_LARGE + b"\n",
            f"larger than {defaults.MAX_REQUEST_SIZE}",
        ),
    ],
    ids=["line", "request"],
)
def test_an_oversized_request_closes_its_connection_only_after_the_answers_before_it(
    service: ServerService,
    config: Path,
    audit_sink: AuditSink,
    oversized: bytes,
    complaint: str,
) -> None:
    grant(config, GRANTED)
    offender, bystander = service.connect(), service.connect()
    assert bystander.ask() == "OK"
    offender.send_until_closed(
        encode_request(client_address=UNKNOWN) + encode_request() + oversized
    )
    assert [offender.reply(), offender.reply(), offender.reply()] == ["DUNNO", "OK", None]
    assert bystander.ask() == "OK"
    errors = entries_where(audit_sink, lambda e: e.get("PBS_ERROR") == "limit")
    assert len(errors) == 1
    assert complaint in errors[0]["MESSAGE"] and errors[0]["PRIORITY"] == "3"
    assert service.serving()


# Redis down, refusing or hung


def test_a_killed_redis_gets_the_unavailable_answer_then_ok_once_restarted_on_its_port(
    tmp_path: Path, audit_sink: AuditSink
) -> None:
    directory = tmp_path / "redis"
    directory.mkdir()
    redis_server = RedisServer(directory, port=free_port())
    redis_server.start()
    try:
        config = server_config(tmp_path, f"redis://127.0.0.1:{redis_server.port}/0", timeout=1.0)
        grant(config, GRANTED)
        with ServerService(tmp_path, config, audit_sink.path) as service:
            client, other = service.connect(), service.connect()
            assert client.ask() == "OK"
            redis_server.stop()
            started = time.monotonic()
            assert client.ask() == UNAVAILABLE
            assert other.ask(client_address=UNKNOWN) == UNAVAILABLE
            assert time.monotonic() - started < 1.0
            assert client.ask(protocol_state="CONNECT") == "DUNNO"
            failed = entries_where(audit_sink, lambda e: e.get("PBS_ACTION") == "DEFER_IF_REJECT")
            assert failed and failed[0]["PBS_REASON"].startswith("lookup failed: ")
            redis_server.start()
            grant(config, GRANTED)
            assert client.ask() == "OK"
            assert other.ask(client_address=UNKNOWN) == "DUNNO"
            assert service.serving()
    finally:
        redis_server.stop()


def ask_while_redis_hangs(
    clients: list[PolicyClient], redis_server: RedisServer, delays: list[float]
) -> list[tuple[str | None, float]]:
    """Stop Redis; each client asks once, `delays` seconds later; each answer and its wait.

    Every fourth client asks at CONNECT, which needs no lookup. Redis resumes after.
    """
    assert redis_server.process is not None
    pause(redis_server.process.pid)

    def ask_later(index: int) -> tuple[str | None, float]:
        time.sleep(delays[index])
        state = "CONNECT" if index % 4 == 3 else "RCPT"
        started = time.monotonic()
        return clients[index].ask(protocol_state=state), time.monotonic() - started

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(ask_later, range(len(clients))))
    finally:
        redis_server.process.send_signal(signal.SIGCONT)


def test_a_hung_redis_gets_every_rcpt_the_unavailable_answer_then_ok_once_it_resumes(
    service: ServerService, config: Path, redis_server: RedisServer
) -> None:
    grant(config, GRANTED)
    clients = [service.connect() for _ in range(8)]
    assert [client.ask() for client in clients] == ["OK"] * 8  # Redis connection kept
    delays = [index * TIMEOUT / 4 for index in range(8)]  # over the rounds a hang makes
    results = ask_while_redis_hangs(clients, redis_server, delays)
    assert [answer for answer, _ in results] == [
        "DUNNO" if index % 4 == 3 else UNAVAILABLE for index in range(8)
    ]
    waits = [elapsed for _, elapsed in results]
    assert TIMEOUT * 0.9 < max(waits) < 4 * TIMEOUT + MARGIN, waits
    assert [client.ask() for client in clients] == ["OK"] * 8


def hung_config(directory: Path, redis_server: RedisServer) -> Path:
    """A [redis] timeout of 1 s: long enough that 2 and 3 timeouts stand apart from noise."""
    return server_config(directory, redis_server.url, timeout=1.0)


def test_a_hung_redis_delays_every_answer_by_at_most_twice_the_timeout(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = hung_config(tmp_path, redis_server)
    grant(config, GRANTED)
    with ServerService(tmp_path, config, audit_sink.path) as service:
        clients = [service.connect() for _ in range(8)]
        assert [client.ask() for client in clients] == ["OK"] * 8
        # The first meets the hang; the others arrive just after its round began.
        results = ask_while_redis_hangs(clients, redis_server, [0.0] + [0.1] * 7)
        assert [client.ask() for client in clients] == ["OK"] * 8
    waits = [elapsed for _, elapsed in results]
    assert max(waits) < 2 * 1.0 + MARGIN, waits


def test_the_first_request_after_redis_hangs_is_answered_within_the_timeout(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = hung_config(tmp_path, redis_server)
    grant(config, GRANTED)
    with ServerService(tmp_path, config, audit_sink.path) as service:
        client = service.connect()
        assert client.ask() == "OK"  # Redis connection kept
        [(answer, waited)] = ask_while_redis_hangs([client], redis_server, [0.0])
        assert answer == UNAVAILABLE
        assert client.ask() == "OK"
    assert waited < 1.0 + MARGIN


# Idle connections and an idle server


def idle_config(directory: Path, redis_server: RedisServer) -> Path:
    return server_config(directory, redis_server.url, policy="idle_timeout = 1\n")


def test_an_idle_connection_is_closed_while_an_active_one_is_served(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = idle_config(tmp_path, redis_server)  # 1 s, the least the config allows
    grant(config, GRANTED)
    with ServerService(tmp_path, config, audit_sink.path) as service:
        idle, active = service.connect(), service.connect()
        assert idle.ask() == "OK"
        last_spoke = time.monotonic()
        answers: list[str | None] = []

        def keep_talking() -> None:
            while time.monotonic() - last_spoke < 2.0:
                answers.append(active.ask())
                time.sleep(0.2)

        talker = threading.Thread(target=keep_talking)
        talker.start()
        assert idle.closed_by_peer(timeout=3)
        closed_after = time.monotonic() - last_spoke
        talker.join()
        assert 0.9 < closed_after < 1.0 + MARGIN
        assert answers and set(answers) == {"OK"}
        assert active.ask() == "OK"
        closes = entries_where(audit_sink, lambda e: "idle for" in e["MESSAGE"])
        assert [(e["MESSAGE"], e["PRIORITY"]) for e in closes] == [("idle for 1 s, closing", "6")]
        assert service.serving()


def test_the_server_exits_0_once_it_has_had_no_connection_for_the_idle_timeout(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    with ServerService(tmp_path, idle_config(tmp_path, redis_server), audit_sink.path) as service:
        client = service.connect()
        assert client.ask() == "DUNNO"
        client.close()
        closed = time.monotonic()
        assert service.wait_for_exit(timeout=1.0 + 2 * MARGIN) == 0
        assert time.monotonic() - closed > 0.9
        assert "Traceback" not in service.stderr()


def test_an_idle_connection_is_closed_and_then_the_idle_server_exits(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    with ServerService(tmp_path, idle_config(tmp_path, redis_server), audit_sink.path) as service:
        client = service.connect()
        assert client.ask() == "DUNNO"
        asked = time.monotonic()
        assert client.closed_by_peer(timeout=1.0 + MARGIN)
        assert service.wait_for_exit(timeout=2.0 + MARGIN) == 0
        assert time.monotonic() - asked > 1.9


# A peer that does not read its answers


def unread_answers_config(directory: Path, redis_server: RedisServer) -> Path:
    """Answers of 4 KiB to unknown addresses, so a few fill a connection's send buffer."""
    padding = "x" * 4000
    return server_config(
        directory, redis_server.url, policy=f'unauthorized = "DEFER_IF_PERMIT 4.7.1 {padding}"\n'
    )


def flood(connection: socket.socket, data: bytes, seconds: float) -> float | None:
    """Send `data` again and again without reading; when the server dropped us, or None.

    A pause between sends keeps the server's rounds small, so that each round's
    answers go out in one piece that fits the send buffer or waits for room whole.
    """
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            connection.sendall(data)
            time.sleep(0.005)
    except (BrokenPipeError, ConnectionResetError):
        return time.monotonic() - started
    except TimeoutError:
        return None
    return None


def test_a_peer_that_does_not_read_its_answers_is_dropped_and_the_others_go_on(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = unread_answers_config(tmp_path, redis_server)
    grant(config, GRANTED)
    with ServerService(tmp_path, config, audit_sink.path) as service:
        bystander = service.connect()
        assert bystander.ask() == "OK"
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.settimeout(3 * DROP_WITHIN)
        stuck.connect(str(service.path))
        dropped: list[float | None] = []
        flooder = threading.Thread(
            target=lambda: dropped.append(
                flood(stuck, encode_request(client_address=UNKNOWN), 3 * DROP_WITHIN)
            )
        )
        flooder.start()
        time.sleep(1)
        started = time.monotonic()
        assert bystander.ask() == "OK"
        assert time.monotonic() - started < DROP_WITHIN + MARGIN
        flooder.join()
        assert dropped[0] is not None and dropped[0] < DROP_WITHIN + 1 + MARGIN
        started = time.monotonic()
        assert bystander.ask() == "OK"
        assert time.monotonic() - started < MARGIN
        stuck.close()


def test_a_peer_that_does_not_read_a_large_answer_is_dropped_after_the_send_timeout(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink
) -> None:
    config = unread_answers_config(tmp_path, redis_server)
    with ServerService(tmp_path, config, audit_sink.path) as service:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.connect(str(service.path))
        # 200 requests in one write: 800 KiB of answers in one write_all, past any buffer.
        stuck.sendall(encode_request(client_address=UNKNOWN) * 200)
        sent = time.monotonic()
        # Reading nothing, so as not to make room: the close shows as a hang-up.
        poller = select.poll()
        poller.register(stuck, select.POLLRDHUP)
        events = poller.poll((DROP_WITHIN + 1 + MARGIN) * 1000)
        stuck.close()
        assert events, f"still open {time.monotonic() - sent:.1f} s after the requests"


# Started wrongly


HAND_OVER = """
import os, sys
fd3, listen_pid, listen_fds, *command = sys.argv[1:]
if fd3 == "none":
    try:
        os.close(3)
    except OSError:
        pass
else:
    os.dup2(int(fd3), 3)
os.environ["LISTEN_PID"] = str(os.getpid()) if listen_pid == "self" else listen_pid
os.environ["LISTEN_FDS"] = listen_fds
os.execv(command[0], command)
"""
"""What systemd does before it execs a service: the socket as fd 3, and LISTEN_* set."""


def run_server(
    fd3: int | None, listen_pid: str = "self", listen_fds: str = "1", **environment: str
) -> subprocess.CompletedProcess[str]:
    """Start the server with `fd3` as fd 3 (or none); LISTEN_PID "self" is its own PID."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    command = [PYTHON, "-m", "pbs_activated", "policy-server"]
    return subprocess.run(
        [PYTHON, "-c", HAND_OVER, "none" if fd3 is None else str(fd3), listen_pid, listen_fds]
        + command,
        pass_fds=() if fd3 is None else (fd3,),
        env=dict(clean, PYTHONPATH=str(REPO), **environment),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_started_without_a_socket_from_systemd_it_exits_2_and_names_the_socket_unit(
    config: Path,
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        [PYTHON, "-m", "pbs_activated", "--config", str(config), "policy-server"],
        env=dict(clean, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "pbs-policy-server.socket" in result.stderr and "Accept=no" in result.stderr


def test_a_connected_socket_as_fd_3_exits_2_saying_accept_no(config: Path) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = run_server(theirs.fileno(), PBS_ACTIVATED_CONFIG=str(config))
    assert result.returncode == 2
    assert "not a listening socket" in result.stderr and "Accept=no" in result.stderr


def test_under_accept_yes_the_server_refuses_the_connection_it_is_given(
    tmp_path: Path, config: Path, audit_sink: AuditSink
) -> None:
    with ServerService(tmp_path, config, audit_sink.path, accept=True) as service:
        client = service.connect()
        assert client.closed_by_peer(timeout=10)
        deadline = time.monotonic() + 5
        while "died with code" not in service.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = service.stderr()
    assert "the socket unit needs Accept=no" in log
    assert "died with code 2" in log  # systemd-socket-activate's report of the exit status


@pytest.mark.parametrize(
    ("fd3", "listen_pid", "listen_fds", "complaint"),
    [
        ("listening", "1", "1", "no socket passed by systemd"),
        ("listening", "self", "2", "expected one socket from systemd, got 2"),
        ("file", "self", "1", "fd 3 is not a socket"),
        ("none", "self", "1", "fd 3 is not a socket"),
    ],
)
def test_a_wrong_hand_over_from_systemd_exits_2(
    tmp_path: Path, config: Path, fd3: str, listen_pid: str, listen_fds: str, complaint: str
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "listening.sock"))
    listener.listen()
    with listener, open(config, "rb") as file:
        descriptor = {"listening": listener.fileno(), "file": file.fileno(), "none": None}[fd3]
        result = run_server(descriptor, listen_pid, listen_fds, PBS_ACTIVATED_CONFIG=str(config))
    assert result.returncode == 2
    assert complaint in result.stderr


# A broken configuration


@pytest.mark.parametrize(
    ("policy", "named"),
    [("idle_timout = 5\n", "idle_timout"), ("idle_timeout = 0.1\n", "idle_timeout")],
    ids=["unknown-key", "out-of-range"],
)
def test_a_broken_config_is_audited_and_every_rcpt_gets_the_unavailable_answer(
    tmp_path: Path, redis_server: RedisServer, audit_sink: AuditSink, policy: str, named: str
) -> None:
    grant(server_config(tmp_path, redis_server.url), GRANTED)
    broken = server_config(tmp_path, redis_server.url, policy=policy)
    with ServerService(tmp_path, broken, audit_sink.path) as service:
        clients = [service.connect() for _ in range(3)]
        for client in clients:
            client.send(
                encode_request()
                + encode_request(client_address=UNKNOWN)
                + encode_request(protocol_state="CONNECT")
            )
        for client in clients:
            assert [client.reply() for _ in range(3)] == [UNAVAILABLE, UNAVAILABLE, "DUNNO"]
        assert clients[0].ask() == UNAVAILABLE
        errors = entries_where(audit_sink, lambda e: e.get("PBS_ERROR") == "config")
        assert len(errors) == 1
        assert named in errors[0]["MESSAGE"] and errors[0]["PRIORITY"] == "3"


# Out of file descriptors


def test_out_of_descriptors_it_stops_accepting_until_a_connection_closes(
    service: ServerService, config: Path, audit_sink: AuditSink
) -> None:
    grant(config, GRANTED)
    first = service.connect()
    assert first.ask() == "OK"
    assert entries_where(audit_sink, is_decision)  # so the audit socket is open too
    open_now = len(os.listdir(f"/proc/{service.pid}/fd"))
    resource.prlimit(service.pid, resource.RLIMIT_NOFILE, (open_now + 2, open_now + 2))
    waiting = [service.connect() for _ in range(4)]
    for client in waiting:
        client.send(encode_request())
    assert [waiting[0].reply(), waiting[1].reply()] == ["OK", "OK"]
    refusals = entries_where(audit_sink, lambda e: e.get("PBS_ERROR") == "accept")
    assert refusals and "cannot accept a connection" in refusals[0]["MESSAGE"]
    assert first.ask() == "OK"
    for client in waiting[2:]:
        client.socket.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.reply()
        client.socket.settimeout(10)
    first.close()
    assert waiting[2].reply() == "OK"
    waiting[0].close()
    assert waiting[3].reply() == "OK"
    assert waiting[1].ask() == "OK"


# Lookup.users_for: the MGET behind a round of several addresses, against the real Redis


def lookup_for(redis_server: RedisServer, timeout: float = TIMEOUT) -> Lookup:
    settings = RedisSettings()
    parse_redis_url(redis_server.url, settings)
    settings.timeout = timeout
    return Lookup(settings)


def authorize(redis_server: RedisServer, users: dict[str, str]) -> None:
    redis = redis_server.client()
    for address, user in users.items():
        redis.set(keys.client_key(address), user, ex=600)


def test_users_for_answers_in_the_order_asked_with_none_for_the_unknown(
    redis_server: RedisServer,
) -> None:
    authorize(redis_server, {GRANTED: "alice", "2001:db8::10": "bob"})
    lookup = lookup_for(redis_server)
    try:
        asked = ["2001:db8::10", UNKNOWN, GRANTED, "2001:db8::10"]
        assert lookup.users_for(asked) == ["bob", None, "alice", "bob"]
        assert lookup.user_for(GRANTED) == "alice"  # the same connection, still in step
        assert lookup.users_for([UNKNOWN]) == [None]
    finally:
        lookup.close()


def test_users_for_takes_a_reply_that_arrives_in_pieces(redis_server: RedisServer) -> None:
    addresses = [f"10.0.{n // 256}.{n % 256}" for n in range(3000)]
    authorize(redis_server, {address: f"user{n:04}" for n, address in enumerate(addresses[::2])})
    lookup = lookup_for(redis_server)
    try:
        users = lookup.users_for(addresses)
        assert users == [f"user{n // 2:04}" if n % 2 == 0 else None for n in range(3000)]
    finally:
        lookup.close()


def test_users_for_survives_a_redis_restart(redis_server: RedisServer) -> None:
    authorize(redis_server, {GRANTED: "alice"})
    lookup = lookup_for(redis_server)
    try:
        assert lookup.users_for([GRANTED]) == ["alice"]
        redis_server.stop()
        redis_server.start()
        authorize(redis_server, {GRANTED: "alice"})
        assert lookup.users_for([GRANTED, UNKNOWN]) == ["alice", None]
    finally:
        lookup.close()


def test_users_for_raises_store_unavailable_within_the_timeout_when_redis_is_down(
    redis_server: RedisServer,
) -> None:
    lookup = lookup_for(redis_server)
    try:
        assert lookup.users_for([GRANTED]) == [None]
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            lookup.users_for([GRANTED])
        assert time.monotonic() - started < TIMEOUT
    finally:
        lookup.close()


def test_users_for_raises_store_unavailable_within_the_timeout_when_redis_hangs(
    redis_server: RedisServer,
) -> None:
    lookup = lookup_for(redis_server)
    assert redis_server.process is not None
    try:
        assert lookup.users_for([GRANTED]) == [None]
        pause(redis_server.process.pid)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            lookup.users_for([GRANTED])
        assert time.monotonic() - started < TIMEOUT + defaults.REDIS_TIMEOUT_SLACK + 0.1
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        lookup.close()


def test_a_lookup_after_a_prefetch_raises_within_the_timeout_when_redis_hangs(
    redis_server: RedisServer,
) -> None:
    lookup = lookup_for(redis_server)
    assert redis_server.process is not None
    try:
        assert lookup.users_for([GRANTED]) == [None]  # a kept connection: prefetch uses it
        pause(redis_server.process.pid)
        lookup.prefetch([GRANTED, UNKNOWN])
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            lookup.users_for([GRANTED, UNKNOWN])
        assert time.monotonic() - started < TIMEOUT + defaults.REDIS_TIMEOUT_SLACK + 0.1
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        lookup.close()
