"""rediss://: the handler's lookup and the writers over TLS, against redis-server's own TLS.

Debian's redis-server 7.0 is built with TLS. Each test makes a throwaway CA, a
server certificate for 127.0.0.1 and a client certificate with openssl
(tests/cluster.py: Tls); the servers require client certificates
(`tls-auth-clients yes`, Redis's default).
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from activation import PolicyService
from cluster import Cluster, Server, Tls
from support import PYTHON, REPO, AuditSink, write_config

from pbs_activated.config import RedisSettings
from pbs_activated.config.load import load
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreUnavailable, keys
from pbs_activated.store.lookup import Lookup
from pbs_activated.store.writer import Writer

PASSWORD = "redis-secret"
ADDRESS = "192.0.2.10"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tmp_path: Path, tls: Tls) -> Iterator[Server]:
    server = Server(tmp_path, "tls-redis", PASSWORD, tls)
    server.start()
    server.client().set(keys.client_key(ADDRESS), "alice", ex=600)
    try:
        yield server
    finally:
        server.kill()


def tls_settings(url: str, tls: Tls, client_certificate: bool = True) -> RedisSettings:
    settings = RedisSettings()
    parse_redis_url(url, settings)
    settings.password = PASSWORD
    settings.tls_ca_file = str(tls.ca_file)
    if client_certificate:
        settings.tls_cert_file = str(tls.client_cert)
        settings.tls_key_file = str(tls.client_key)
    return settings


def lookup_user(settings: RedisSettings, address: str = ADDRESS) -> str | None:
    lookup = Lookup(settings)
    try:
        return lookup.user_for(address)
    finally:
        lookup.close()


def test_lookup_reads_over_tls(server: Server, tls: Tls) -> None:
    settings = tls_settings(f"rediss://127.0.0.1:{server.port}", tls)
    assert lookup_user(settings) == "alice"
    assert lookup_user(settings, "192.0.2.99") is None


def test_lookup_refuses_a_server_our_ca_did_not_sign(server: Server, tls: Tls) -> None:
    settings = tls_settings(f"rediss://127.0.0.1:{server.port}", tls)
    settings.tls_ca_file = ""  # the system's CAs do not know the test CA
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        lookup_user(settings)


def test_lookup_refuses_a_certificate_for_another_host(server: Server, tls: Tls) -> None:
    settings = tls_settings(f"rediss://localhost:{server.port}", tls)  # the cert names 127.0.0.1
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED|match"):
        lookup_user(settings)


def test_a_server_requiring_client_certificates_refuses_a_lookup_without(
    server: Server, tls: Tls
) -> None:
    settings = tls_settings(f"rediss://127.0.0.1:{server.port}", tls, client_certificate=False)
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_REQUIRED|EOF occurred"):
        lookup_user(settings)


def test_the_writers_authorize_over_tls(server: Server, tls: Tls) -> None:
    client = Writer(tls_settings(f"rediss://127.0.0.1:{server.port}", tls))
    assert client.authorize("192.0.2.20", "bob", keys.now_ms() + 60_000) is True
    assert server.client().get(keys.client_key("192.0.2.20")) == "bob"


def test_the_handler_answers_ok_over_tls(server: Server, tls: Tls, tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    config = write_config(
        tmp_path / "pbs-activated.toml",
        f'[redis]\nurl = "rediss://127.0.0.1:{server.port}"\npassword_file = "{secret}"\n'
        f'tls_ca_file = "{tls.ca_file}"\ntls_cert_file = "{tls.client_cert}"\n'
        f'tls_key_file = "{tls.client_key}"\n',
    )
    sink = AuditSink(tmp_path / "journal.sock")
    service = PolicyService(tmp_path, config, sink.path)
    try:
        client = service.connect()
        assert client.ask(client_address=ADDRESS) == "OK"
        assert client.ask(client_address="192.0.2.99") == "DUNNO"
        client.close()
    finally:
        service.stop()
        sink.close()


def test_sentinels_and_servers_all_over_tls(tmp_path: Path, tls: Tls) -> None:
    """With rediss:// the Sentinels are asked over TLS too, by the handler and the writers."""
    cluster = Cluster(tmp_path / "cluster", replicas=1, sentinels=3, password=PASSWORD, tls=tls)
    try:
        cluster.start()
        settings = tls_settings("rediss://", tls)
        settings.sentinels = tuple(sentinel.address for sentinel in cluster.sentinels)
        writer = Writer(settings)
        assert writer.authorize(ADDRESS, "alice", keys.now_ms() + 60_000) is True
        assert cluster.servers[1].client().get(keys.client_key(ADDRESS)) == "alice"
        assert lookup_user(settings) == "alice"
    finally:
        cluster.stop()


def test_a_handler_without_tls_imports_neither_ssl_nor_socket(tmp_path: Path) -> None:
    """ssl and the Python half of socket cost a handler ~15 ms: only rediss:// pays it."""
    config = write_config(tmp_path / "pbs-activated.toml", '[redis]\nurl = "redis://127.0.0.1:1"\n')
    script = textwrap.dedent(f"""
        import sys
        from pbs_activated.store import StoreUnavailable
        from pbs_activated.config.load import load
        from pbs_activated.store.lookup import Lookup
        try:
            Lookup(load({str(config)!r}).redis).user_for("192.0.2.10")
        except StoreUnavailable:
            pass
        print(sorted(name for name in ("ssl", "socket", "redis") if name in sys.modules))
    """)
    result = subprocess.run(
        [PYTHON, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"
    assert load(str(config)).redis.tls is False


def test_the_handler_takes_password_and_tls_key_from_systemd_credentials(
    server: Server, tls: Tls, tmp_path: Path
) -> None:
    """LoadCredential=redis-password:... and LoadCredential=redis-tls-key:...: the
    config names only the certificate, no secret."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text(PASSWORD + "\n")
    (credentials / "redis-tls-key").write_bytes(tls.client_key.read_bytes())
    config = write_config(
        tmp_path / "pbs-activated.toml",
        f'[redis]\nurl = "rediss://127.0.0.1:{server.port}"\n'
        f'tls_ca_file = "{tls.ca_file}"\ntls_cert_file = "{tls.client_cert}"\n',
    )
    sink = AuditSink(tmp_path / "journal.sock")
    service = PolicyService(
        tmp_path,
        config,
        sink.path,
        wrapper=("env", f"CREDENTIALS_DIRECTORY={credentials}"),
    )
    try:
        client = service.connect()
        assert client.ask(client_address=ADDRESS) == "OK"
        client.close()
    finally:
        service.stop()
        sink.close()
