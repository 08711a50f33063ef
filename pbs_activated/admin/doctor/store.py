"""doctor's store and time checks: reachable, closed, durable, roomy, in agreement, on time.

The store is where "who may relay" lives: open to a local user it lets that user
make Postfix relay, without persistence a restart forgets every login, full it
refuses the reader's writes (noeviction). Expiry is counted from each login's own
time across hosts, so the clock of this host and the store's must agree.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator

from pbs_activated.admin.doctor.findings import ERROR, OK, UNKNOWN, WARNING, Finding, Host
from pbs_activated.admin.doctor.logs import messages
from pbs_activated.config import Config, RedisSettings, defaults
from pbs_activated.store import StoreError, StoreRefused
from pbs_activated.store.writer import Writer

MEMORY_HEADROOM = 0.8
"""Past this share of maxmemory, a burst of logins may find the store full."""

CLOCK_SKEW = 1.0
"""Seconds between this host's clock and the store's that doctor tolerates."""


def info(writer: Writer, section: str) -> dict[str, str]:
    """One INFO section as a dict."""
    reply = writer.command("INFO", section)
    text = reply if isinstance(reply, str) else ""
    if isinstance(reply, dict):  # redis-py parses INFO into a dict
        return {name: str(value) for name, value in reply.items()}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def check(config: Config, host: Host) -> Iterator[Finding]:
    """Reachable within the timeout, closed, persistent, with headroom; a cluster agreeing."""
    settings = config.redis
    writer = Writer(settings)
    started = time.monotonic()
    try:
        writer.ping()
    except StoreError as error:
        yield Finding(
            "store.reachable",
            ERROR,
            f"the store {settings.url} does not answer: {error}; relaying is deferred",
            "systemctl start pbs-store.service (or the configured server); then doctor again",
        )
        return
    elapsed = time.monotonic() - started
    yield Finding("store.reachable", OK, f"the store {settings.url} answered in {elapsed:.3f} s")
    yield _closed(settings, writer)
    try:
        persistence = info(writer, "persistence")
        memory = info(writer, "memory")
    except StoreError as error:
        yield Finding("store.persistence", UNKNOWN, f"INFO refused: {error}")
        return
    if persistence.get("aof_enabled") == "1":
        yield Finding("store.persistence", OK, "append-only file on: acknowledged logins survive")
    else:
        yield Finding(
            "store.persistence",
            WARNING,
            "no append-only file: a crash loses the logins since the last snapshot",
            "appendonly yes, appendfsync always (as pbs-store.service's store.conf)",
        )
    yield _memory(memory)
    if settings.sentinels:
        yield from _cluster(settings, writer)
    yield from _logins_stored(config, host, writer)


def _closed(settings: RedisSettings, writer: Writer) -> Finding:
    """Whether anyone without a secret can use the store, and how it is reachable at all."""
    anonymous = copy.copy(settings)
    anonymous.username = anonymous.password = ""
    open_to_all = True
    try:
        Writer(anonymous).ping()
    except StoreRefused:
        open_to_all = False
    except StoreError:
        open_to_all = False
    if open_to_all:
        return Finding(
            "store.open",
            ERROR,
            f"the store {settings.url} answers without a password: every local user who"
            " reaches it can authorize a relay",
            "remove [redis] url to use the package's own store, or give the server the"
            " ACL users of `pbs-activated store-acl` (pbs-activated(8), SECURITY)",
        )
    if settings.own_store():
        directory = os.path.dirname(defaults.REDIS_URL.removeprefix("unix://"))
        try:
            mode = os.stat(directory).st_mode
        except OSError:
            mode = 0
        port = info(writer, "server").get("tcp_port", "0")
        if mode & 0o007 or port not in ("", "0"):
            return Finding(
                "store.open",
                ERROR,
                f"the package's store is reachable by others ({directory} mode"
                f" {mode & 0o777:o}, TCP port {port})",
                "reinstall pbs-activated: its unit makes the directory 0750 and no listener",
            )
    return Finding("store.open", OK, "the store refuses anyone without a secret")


def _memory(memory: dict[str, str]) -> Finding:
    used = int(memory.get("used_memory", "0") or 0)
    limit = int(memory.get("maxmemory", "0") or 0)
    policy = memory.get("maxmemory_policy", "")
    if policy and policy != "noeviction":
        return Finding(
            "store.memory",
            WARNING,
            f"maxmemory-policy is {policy}: a full store evicts authorizations",
            "maxmemory-policy noeviction: a full store then refuses writes, and the reader waits",
        )
    if limit and used > MEMORY_HEADROOM * limit:
        return Finding(
            "store.memory",
            WARNING,
            f"the store uses {used} of {limit} bytes ({used / limit:.0%})",
            "raise maxmemory in the store's configuration",
        )
    bound = f"of {limit} bytes" if limit else "(no maxmemory)"
    return Finding("store.memory", OK, f"the store uses {used} bytes {bound}")


def _cluster(settings: RedisSettings, writer: Writer) -> Iterator[Finding]:
    import redis

    masters = {}
    for host, port in settings.sentinels:
        try:
            client = redis.Redis(
                host, port, password=settings.sentinel_password or None, socket_timeout=2
            )
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings.service)
            masters[f"{host}:{port}"] = ":".join(str(part) for part in reply or ())
        except redis.RedisError as error:
            masters[f"{host}:{port}"] = f"(no answer: {error})"
    if len(set(masters.values())) != 1:
        yield Finding(
            "store.sentinels",
            ERROR,
            "the Sentinels disagree on the master: "
            + ", ".join(f"{name} says {master}" for name, master in masters.items()),
            "see docs/cluster.md; a Sentinel that cannot reach the others needs its network",
        )
    else:
        yield Finding("store.sentinels", OK, f"every Sentinel names {next(iter(masters.values()))}")
    replication = info(writer, "replication")
    offset = int(replication.get("master_repl_offset", "0") or 0)
    replicas = [value for name, value in replication.items() if name.startswith("slave")]
    lagging = [r for r in replicas if "state=online" not in r or _offset(r) < offset - 1_000_000]
    if not replicas or lagging:
        yield Finding(
            "store.replicas",
            WARNING if replicas else ERROR,
            f"{len(replicas)} replica(s), {len(lagging)} not in sync",
            "check the replicas' logs and their link to the master",
        )
    else:
        yield Finding("store.replicas", OK, f"{len(replicas)} replica(s) online and in sync")


def _offset(replica: str) -> int:
    fields = dict(part.split("=", 1) for part in replica.split(",") if "=" in part)
    return int(fields.get("offset", "0") or 0)


def _logins_stored(config: Config, host: Host, writer: Writer) -> Iterator[Finding]:
    """Logins the reader audited, still live, that the store does not hold."""
    now = time.time()
    since = now - config.authorization.lifetime
    logins = messages(host, since, "PBS_EVENT=login")
    revokes = messages(host, since, "PBS_EVENT=revoke")
    if logins is None or revokes is None:
        return
    revoked = {entry.get("PBS_CLIENT_ADDRESS") for entry in revokes}
    stored = {address for address, _, _ in writer.authorizations()}
    missing = [
        entry
        for entry in logins
        if int(entry.get("PBS_EXPIRES", "0") or 0) > now + 2
        and entry.get("PBS_CLIENT_ADDRESS") not in stored | revoked
    ]
    if missing:
        example = missing[0]
        yield Finding(
            "store.logins",
            ERROR,
            f"{len(missing)} login(s) the reader took are not in the store, e.g."
            f" {example.get('PBS_USER')} from {example.get('PBS_CLIENT_ADDRESS')}",
            "the store lost data (restarted without persistence, or another store):"
            " check [redis] url and the store's persistence",
        )
    else:
        yield Finding(
            "store.logins", OK, f"every live login the reader took is stored ({len(logins)})"
        )


def check_time(config: Config, host: Host) -> Iterator[Finding]:
    """The clock is synchronised, and agrees with the store's TIME."""
    status, output = host.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    virtual, _ = host.run(["systemd-detect-virt", "--container", "--quiet"])
    chrony, tracking = host.run(["chronyc", "-n", "tracking"])
    if status == 0 and output.strip() == "yes":
        yield Finding("time.sync", OK, "the clock is synchronised (timedatectl)")
    elif chrony == 0 and "Leap status     : Normal" in tracking:
        yield Finding("time.sync", OK, "the clock is synchronised (chrony)")
    elif virtual == 0:
        yield Finding("time.sync", OK, "a container: the clock is the host's; check it there")
    elif status == 0:
        yield Finding(
            "time.sync",
            WARNING,
            "the clock is not synchronised: lifetimes count from each login's own time",
            "apt install systemd-timesyncd (or chrony); timedatectl set-ntp true",
        )
    else:
        yield Finding("time.sync", UNKNOWN, "neither timedatectl nor chronyc answered")
    try:
        writer = Writer(config.redis)
        reply = writer.command("TIME")
        seconds, micros = reply if isinstance(reply, list | tuple) else (0, 0)
        skew = abs(int(seconds) + int(micros) / 1e6 - time.time())
    except (StoreError, ValueError, TypeError):
        return
    if skew > CLOCK_SKEW:
        yield Finding(
            "time.store",
            WARNING,
            f"this host's clock and the store's differ by {skew:.1f} s",
            "synchronise both hosts' clocks (timedatectl, chrony)",
        )
    else:
        yield Finding("time.store", OK, f"the store's clock agrees within {skew:.3f} s")
