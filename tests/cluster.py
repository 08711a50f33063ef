"""A Redis cluster on loopback for the cluster tests: one master, replicas, Sentinels.

Real processes, each in its own directory under the test's temp dir: Debian's
redis-server (the master and its replicas, each also on a unix socket, as a
replica on an SMTP host would be) and redis-sentinel, with timings shortened so
that a failover takes seconds, not the half minute of the defaults.

With `Acl`, the cluster is closed as docs/cluster.md says: every server has the
ACL file `pbs-activated store-acl` writes (default user off, the components'
users, pbs-replica, pbs-sentinel) and the settings of
docs/examples/cluster-redis.conf, every Sentinel those of
docs/examples/cluster-sentinel.conf, with the test's secrets filled in.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from support import REPO, free_port, run_cli

from pbs_activated.config import defaults
from pbs_activated.store import acl

SERVICE = "pbs"
"""The name the Sentinels monitor the master under (`[redis] service`)."""

DOWN_AFTER_MS = 2000
"""Sentinel's `down-after-milliseconds`: the default (30 s) would make the test crawl.

Not less: Sentinel pings every second, so at 1000 a master just promoted can be
declared down before it has answered its first ping, and a second, needless
failover follows (seen here about one run in five).
"""

FAILOVER_TIMEOUT_MS = 5000
"""Sentinel's `failover-timeout`: how long a failover may take before another is tried.

Also how long Sentinel tolerates a replica following another address than the
master's before it re-points it, which a proxied cluster (see LinkProxy) must
outlast: there it is a minute.
"""


SLOW_MACHINE_WAIT = 60.0
"""Seconds to wait for a process to start or the cluster to settle before failing.

Everything here takes well under a second on an idle machine; the margin is
for a CI host busy with other tests, and costs a passing run nothing.
"""


class Tls:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, by openssl.

    `addresses`: the IP addresses the server certificate names (its subjectAltName).
    """

    def __init__(self, directory: Path, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.crt"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.crt"
        self.client_key = directory / "client.key"
        ca_key = directory / "ca.key"
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            self.ca_file,
            "-days",
            "2",
            "-subj",
            "/CN=pbs-activated test CA",
        )
        for name, cert, key, extension in (
            (
                addresses[0],
                self.server_cert,
                self.server_key,
                "subjectAltName=" + ",".join(f"IP:{address}" for address in addresses),
            ),
            ("pbs-client", self.client_cert, self.client_key, "extendedKeyUsage=clientAuth"),
        ):
            request = directory / f"{cert.stem}.csr"
            _openssl(
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                key,
                "-out",
                request,
                "-subj",
                f"/CN={name}",
            )
            extensions = directory / f"{cert.stem}.ext"
            extensions.write_text(extension + "\n")
            _openssl(
                "x509",
                "-req",
                "-in",
                request,
                "-CA",
                self.ca_file,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-out",
                cert,
                "-days",
                "2",
                "-extfile",
                extensions,
            )

    def server_arguments(self) -> list[str]:
        """redis-server/redis-sentinel options: TLS only, client certificates required."""
        return [
            "--tls-cert-file",
            str(self.server_cert),
            "--tls-key-file",
            str(self.server_key),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "yes",
            "--tls-replication",
            "yes",
        ]

    def client_options(self) -> dict[str, object]:
        """redis-py options for the harness's own clients."""
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }


def _openssl(*arguments: object) -> None:
    subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True)


EXAMPLES = REPO / "docs" / "examples"

HOST_SPECIFIC = {
    "port",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-replication",
    "tls-auth-clients",
    "bind",
    "replica-announce-ip",
    "unixsocket",
    "unixsocketperm",
    "replicaof",
    "aclfile",
    "sentinel announce-ip",
    "sentinel monitor",
    "sentinel down-after-milliseconds",
    "sentinel failover-timeout",
}
"""The examples' directives about one host (its addresses, ports, files, timings):
the harness sets its own. TLS is Tls's, for the tests that use it."""


def example_settings(name: str, passwords: dict[str, str]) -> list[str]:
    """The lines of docs/examples/NAME that hold for every host, each <secret> filled in."""
    settings = []
    for line in (EXAMPLES / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = line.split()
        directive = " ".join(words[:2]) if words[0] == "sentinel" else words[0]
        if directive not in HOST_SPECIFIC:
            settings.append(re.sub(r"<([a-z-]+)>", lambda m: passwords[m.group(1)], line))
    return settings


class Acl:
    """A cluster closed by ACL users: the secrets, the servers' ACL file, the examples.

    One secret per name, as /etc/pbs-activated/secrets/ holds them on every host
    of a cluster; the ACL file is what `pbs-activated store-acl` makes of them.
    """

    NAMES = (*acl.USERS, acl.SENTINEL_CLIENT_SECRET)

    def __init__(self, directory: Path) -> None:
        self.secrets = directory / "secrets"
        self.secrets.mkdir(parents=True)
        self.passwords = {name: f"{name}-{secrets.token_hex(8)}" for name in self.NAMES}
        for name, password in self.passwords.items():
            (self.secrets / name).write_text(password + "\n")
        self.acl_file = directory / "users.acl"
        run_cli("store-acl", "--secrets", str(self.secrets), "--output", str(self.acl_file))

    def server_options(self) -> list[str]:
        """redis-server's options: the ACL file and cluster-redis.conf's settings."""
        options = ["--aclfile", str(self.acl_file)]
        for line in example_settings("cluster-redis.conf", self.passwords):
            directive, *values = line.split()
            options += [f"--{directive}", *values]
        return options

    def sentinel_lines(self) -> list[str]:
        """sentinel.conf's lines from cluster-sentinel.conf: logins and users."""
        return example_settings("cluster-sentinel.conf", self.passwords)

    def login(self, user: str) -> tuple[str, str]:
        """(user, password) of one of the servers' users."""
        return user, self.passwords[user]

    def handler_environment(self) -> list[str]:
        """What pbs-policy@.service names in its environment: the handler's user and secret.

        Not credentials, which systemd would set up for every connection.
        """
        return [
            f"{defaults.STORE_USER_ENVIRONMENT}={acl.POLICY_USER}",
            f"{defaults.STORE_PASSWORD_FILE_ENVIRONMENT}={self.secrets / acl.POLICY_USER}",
        ]

    def credentials(self, directory: Path, user: str) -> Path:
        """A CREDENTIALS_DIRECTORY as systemd gives a long-lived unit of the component `user`.

        SetCredential=store-user:USER, LoadCredential=store-password:... and the
        `sentinel-password` a drop-in adds (docs/cluster.md).
        """
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in (
            (defaults.STORE_USER_CREDENTIAL, user),
            (defaults.STORE_PASSWORD_CREDENTIAL, self.passwords[user]),
            (defaults.SENTINEL_CREDENTIAL, self.passwords[acl.SENTINEL_CLIENT_SECRET]),
        ):
            (directory / name).write_text(value + "\n")
        return directory


class Server:
    """One redis-server: the master or a replica, on a loopback port and a unix socket."""

    def __init__(
        self,
        directory: Path,
        name: str,
        password: str = "",
        tls: Tls | None = None,
        port: int | None = None,
        bind: tuple[str, ...] = ("127.0.0.1",),
        prefix: tuple[str, ...] = (),
        closed: Acl | None = None,
    ) -> None:
        """`bind` lists the addresses to listen on; `prefix` goes before the command
        (`ip netns exec NAME` to run the server on another "host"); `closed` closes
        it with ACL users instead of `password`, and the harness logs in as pbs-admin."""
        self.directory = directory / name
        self.closed = closed
        self.bind = bind
        self.prefix = prefix
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port or free_port()
        self.socket_path = self.directory / "redis.sock"
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, replica_of: tuple[str, int] | None = None) -> None:
        """Start the server (a replica of the master at `replica_of`); return once it answers."""
        port_options = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        arguments = [
            *self.prefix,
            "redis-server",
            *port_options,
            "--bind",
            " ".join(self.bind),
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            # A new replica gets its copy at once, not after the default 5 s delay.
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            # Redis's default, spelled out: a replica cut off from its master keeps
            # answering from its data, which is what the SMTP hosts' handlers read.
            "--replica-serve-stale-data",
            "yes",
            # DEBUG RELOAD over the unix socket: a server answering LOADING, for real.
            "--enable-debug-command",
            "local",
        ]
        if self.tls:
            arguments += self.tls.server_arguments()
        if self.closed:
            arguments += self.closed.server_options()
        elif self.password:
            arguments += ["--requirepass", self.password, "--masterauth", self.password]
        if replica_of is not None:
            arguments += ["--replicaof", *map(str, replica_of)]
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL)
        _wait_until(lambda: self.client().ping(), f"{self.name} did not start", self.log)

    def client(self):  # type: ignore[no-untyped-def]
        """A redis-py client on the unix socket (no TLS needed there).

        On a closed server it is the administrator's pbs-admin, which may list,
        grant and revoke, and read ROLE and INFO: all that the tests look at.
        """
        import redis

        user, password = (
            self.closed.login(acl.ADMIN_USER) if self.closed else (None, self.password or None)
        )
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            username=user,
            password=password,
            decode_responses=True,
            socket_timeout=2,
        )

    def role(self) -> str:
        return str(self.client().execute_command("ROLE")[0])

    def stored_keys(self, pattern: str = "pbs:client:*") -> set[str]:
        return set(self.client().scan_iter(match=pattern, count=1000))

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash, with no chance to hand anything over."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None
        self.socket_path.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing, as on a stalled host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None


class Sentinel:
    """One redis-sentinel process watching the master under SERVICE."""

    def __init__(
        self,
        directory: Path,
        name: str,
        master: Server,
        password: str = "",
        tls: Tls | None = None,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        closed: Acl | None = None,
    ) -> None:
        """`closed`: the logins and users of cluster-sentinel.conf instead of `password`;
        the harness then asks as the components do (the `sentinel-password`)."""
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        if closed:
            password = closed.passwords[acl.SENTINEL_CLIENT_SECRET]
        self.password = password
        self.tls = tls
        self.config = self.directory / "sentinel.conf"
        lines = [
            f"port {0 if tls else self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.directory / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 2",
        ]
        if closed:
            lines += closed.sentinel_lines()
        else:
            if master.password:
                lines.append(f"sentinel auth-pass {SERVICE} {master.password}")
            if password:
                lines.append(f"requirepass {password}")
        if tls:
            lines += [
                f"tls-port {self.port}",
                f"tls-cert-file {tls.server_cert}",
                f"tls-key-file {tls.server_key}",
                f"tls-ca-cert-file {tls.ca_file}",
                "tls-auth-clients yes",
                "tls-replication yes",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-sentinel", str(self.config)], stdout=subprocess.DEVNULL
        )
        # Asked over TCP, so make sure it is this process that answers: another one
        # on the same port would hide a sentinel that could not listen.
        pid = self.process.pid
        _wait_until(
            lambda: _listens(pid, self.port) and self.master_state(),
            f"{self.name} did not start",
            self.log,
        )

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        options = self.tls.client_options() if self.tls else {}
        return redis.Redis(
            *self.address,
            password=self.password or None,
            decode_responses=True,
            socket_timeout=2,
            **options,
        )

    def master_state(self) -> dict[str, str]:
        """What this sentinel knows of the master, as a dict.

        From `SENTINEL MASTERS`, which the components may ask on a closed Sentinel
        (redis-py does), where `SENTINEL MASTER` is refused.
        """
        for reply in self.client().execute_command("SENTINEL", "MASTERS"):
            state = (
                {str(k): str(v) for k, v in reply.items()}
                if isinstance(reply, dict)
                else dict(zip(reply[::2], reply[1::2], strict=False))
            )
            if state.get("name") == SERVICE:
                return state
        raise RuntimeError(f"{self.name} does not monitor {SERVICE}")

    def master_address(self) -> tuple[str, int]:
        host, port = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return (host, int(port))

    def log(self) -> str:
        path = self.directory / "sentinel.log"
        return path.read_text() if path.exists() else ""

    def pause(self) -> None:
        """SIGSTOP: the sentinel accepts connections (the kernel does) but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Cluster:
    """A master, `replicas` replicas of it, and `sentinels` Sentinels watching them."""

    def __init__(
        self,
        directory: Path,
        replicas: int = 2,
        sentinels: int = 3,
        password: str = "",
        sentinel_password: str = "",
        tls: Tls | None = None,
        proxied: bool = False,
        closed: bool = False,
    ) -> None:
        """`closed`: ACL users on every server and Sentinel (see Acl), no passwords."""
        self.directory = directory
        self.proxy: LinkProxy | None = None
        self.proxied = proxied
        self.acl = Acl(directory / "acl") if closed else None
        self.servers = [Server(directory, "master", password, tls, closed=self.acl)] + [
            Server(directory, f"replica{index}", password, tls, closed=self.acl)
            for index in range(1, replicas + 1)
        ]
        self.sentinels = [
            Sentinel(
                directory,
                f"sentinel{index}",
                self.servers[0],
                sentinel_password,
                tls,
                60_000 if proxied else FAILOVER_TIMEOUT_MS,
                self.acl,
            )
            for index in range(1, sentinels + 1)
        ]
        self.password = password
        self.sentinel_password = sentinel_password

    @property
    def sentinel_addresses(self) -> list[str]:
        """`[redis] sentinels` for a config file."""
        return [f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels]

    def start(self) -> None:
        """Start everything; return once the replicas are in sync and the sentinels agree."""
        master, *replicas = self.servers
        master.start()
        upstream = master.address
        if self.proxied:
            self.proxy = LinkProxy(master.address)
            upstream = self.proxy.address
        for replica in replicas:
            replica.start(replica_of=upstream)
        _wait_until(
            lambda: self.replicas_online(master) == len(replicas),
            "replicas did not come online",
            master.log,
        )
        for sentinel in self.sentinels:
            sentinel.start()
        others = str(len(self.sentinels) - 1)
        for sentinel in self.sentinels:
            _wait_until(
                lambda s=sentinel: (state := s.master_state())["num-slaves"] == str(len(replicas))
                and state["num-other-sentinels"] == others,
                f"{sentinel.name} did not discover the cluster",
                sentinel.log,
                timeout=SLOW_MACHINE_WAIT,
            )

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.kill()
        if self.proxy is not None:
            self.proxy.close()

    def master(self) -> Server:
        """The server the first answering sentinel names as master."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            address = sentinel.master_address()
            return next(server for server in self.servers if server.address == address)
        raise RuntimeError("no sentinel running")

    @staticmethod
    def replicas_online(server: Server) -> int:
        role = server.client().execute_command("ROLE")
        return len(role[2]) if role[0] == "master" else 0

    def wait_for_new_master(self, old: Server, timeout: float = 30) -> tuple[Server, float]:
        """Wait until every running sentinel names a master other than `old`, which
        answers as a master; return it and the seconds waited."""
        started = time.monotonic()

        def promoted() -> bool:
            addresses = {s.master_address() for s in self.sentinels if s.process is not None}
            if len(addresses) != 1 or old.address in addresses:
                return False
            return self.master().role() == "master"

        _wait_until(
            promoted,
            "no replica was promoted",
            lambda: "\n".join(s.log() for s in self.sentinels),
            timeout=timeout,
        )
        return self.master(), time.monotonic() - started

    def wait_for_replicas_in_sync(self, timeout: float = SLOW_MACHINE_WAIT) -> None:
        """Wait until every running replica follows the master and has all its writes."""
        master = self.master()
        replicas = [s for s in self.servers if s.running and s is not master]

        def in_sync() -> bool:
            master_offset = int(master.client().info("replication")["master_repl_offset"])
            for replica in replicas:
                info = replica.client().info("replication")
                if info.get("role") != "slave" or int(info.get("master_port", 0)) != master.port:
                    return False
                if info.get("master_link_status") != "up":
                    return False
                if int(info.get("slave_repl_offset", -1)) < master_offset:
                    return False
            return True

        _wait_until(in_sync, "replicas did not catch up", master.log, timeout=timeout)


class LinkProxy:
    """A TCP relay between the master and its replicas that the test can hold and cut.

    On loopback a killed master's last writes still reach its replicas (the kernel
    delivers what was sent). On a real network a crashed host takes them with it;
    holding the relay, then closing it, is that crash: the master has taken the
    write, no replica will ever see it.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = ("127.0.0.1", int(self.listener.getsockname()[1]))
        self.held = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        """Stop relaying: what either side sends from now on waits in the relay."""
        self.held.set()

    def release(self) -> None:
        self.held.clear()

    def close(self) -> None:
        """Cut every link; whatever the relay held is dropped, never delivered."""
        self.closed.set()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                replica, _ = self.listener.accept()
                master = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [replica, master]
            for source, destination in ((replica, master), (master, replica)):
                threading.Thread(
                    target=self._relay, args=(source, destination), daemon=True
                ).start()

    def _relay(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                while self.held.is_set() and not self.closed.is_set():
                    time.sleep(0.01)
                if self.closed.is_set():
                    return
                destination.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, destination):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _listens(pid: int, port: int) -> bool:
    """Tell whether process `pid` holds the socket listening on TCP `port`."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    sockets.add(f"socket:[{fields[9]}]")
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in sockets:
                return True
    return False


def _wait_until(
    condition, message: str, log=lambda: "", timeout: float = SLOW_MACHINE_WAIT
) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as error:  # the process is not listening yet
            last_error = error
        time.sleep(0.05)
    raise RuntimeError(f"{message} (last error: {last_error})\n{log()[-3000:]}")
