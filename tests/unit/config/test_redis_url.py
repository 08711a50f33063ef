"""`[redis] url` and the cluster keys of `[redis]`: what each accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbs_activated.config import ConfigError, RedisSettings, defaults
from pbs_activated.config.check import apply_redis
from pbs_activated.config.load import load
from pbs_activated.config.storeurl import parse_redis_url


def parsed(url: str) -> RedisSettings:
    settings = RedisSettings()
    parse_redis_url(url, settings)
    return settings


def redis_table(tmp_path: Path, text: str) -> RedisSettings:
    path = tmp_path / "pbs-activated.toml"
    path.write_text("[redis]\n" + text)
    return load(str(path)).redis


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///run/redis/redis-server.sock", ("/run/redis/redis-server.sock", "", "", 0)),
        ("unix://:secret@/run/redis.sock?db=2", ("/run/redis.sock", "", "secret", 2)),
        ("unix://pbs:secret@/run/redis.sock", ("/run/redis.sock", "pbs", "secret", 0)),
        ("unix://secret@/run/redis.sock", ("/run/redis.sock", "", "secret", 0)),
    ],
)
def test_unix_urls_name_a_socket_and_credentials(url: str, expected: tuple[object, ...]) -> None:
    settings = parsed(url)
    assert (settings.unix_path, settings.username, settings.password, settings.db) == expected
    assert settings.tls is False


def test_a_password_may_hold_at_signs_and_colons_escaped() -> None:
    settings = parsed("redis://pbs:p%40ss%3Aw@redis.example.test")
    assert (settings.username, settings.password) == ("pbs", "p@ss:w")


def test_an_at_sign_in_a_password_unescaped_still_splits_at_the_last_one() -> None:
    assert parsed("redis://:p@ss@redis.example.test").password == "p@ss"


def test_rediss_means_tls_on_the_default_port() -> None:
    settings = parsed("rediss://redis.example.test")
    assert (settings.tls, settings.host, settings.port) == (True, "redis.example.test", 6379)


def test_an_ipv6_host_without_port_takes_the_default_port() -> None:
    assert (parsed("redis://[2001:db8::6]").host, parsed("redis://[2001:db8::6]").port) == (
        "2001:db8::6",
        6379,
    )


def test_a_url_with_only_a_scheme_means_the_local_server() -> None:
    settings = parsed("redis://")
    assert (settings.host, settings.port, settings.db) == ("127.0.0.1", 6379, 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost/zero", "database must be a number"),
        ("redis://localhost:70000", "port out of range"),
        ("redis://localhost:0", "port out of range"),
        ("memcached://localhost", "must start with"),
        ("localhost:6379", "must start with"),
        ("unix://run/redis.sock", "absolute"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parsed(url)


def test_the_cluster_keys_have_their_defaults(tmp_path: Path) -> None:
    settings = redis_table(tmp_path, "")
    assert settings.sentinels == ()
    assert settings.service == defaults.SENTINEL_SERVICE
    assert settings.min_replicas is None  # "auto"
    assert settings.replication_timeout == defaults.REPLICATION_TIMEOUT
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == ("", "", "")


def test_sentinels_are_host_port_pairs_defaulting_to_sentinels_port(tmp_path: Path) -> None:
    settings = redis_table(
        tmp_path, 'sentinels = ["10.0.0.1:26380", "sentinel.example.test", "[2001:db8::5]:26379"]\n'
    )
    assert settings.sentinels == (
        ("10.0.0.1", 26380),
        ("sentinel.example.test", 26379),
        ("2001:db8::5", 26379),
    )


def test_sentinels_with_a_unix_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sentinels"):
        redis_table(tmp_path, 'url = "unix:///run/redis.sock"\nsentinels = ["10.0.0.1"]\n')


def test_the_sentinel_password_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text("sentinel-secret\n")
    settings = redis_table(
        tmp_path, f'sentinels = ["10.0.0.1"]\nsentinel_password_file = "{secret}"\n'
    )
    assert settings.sentinel_password == "sentinel-secret"


def test_a_missing_password_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent-password"):
        redis_table(tmp_path, f'password_file = "{tmp_path / "absent-password"}"\n')


def test_systemd_credentials_supply_both_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text("redis-secret\n")
    (credentials / "sentinel-password").write_text("sentinel-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = redis_table(tmp_path, 'sentinels = ["10.0.0.1"]\n')
    assert (settings.password, settings.sentinel_password) == ("redis-secret", "sentinel-secret")


def test_a_password_file_wins_over_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text("from-credential\n")
    secret = tmp_path / "redis-password"
    secret.write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert redis_table(tmp_path, f'password_file = "{secret}"\n').password == "from-file"


@pytest.mark.parametrize(("value", "expected"), [('"auto"', None), ("0", 0), ("2", 2)])
def test_min_replicas_acknowledged_is_auto_or_a_count(
    tmp_path: Path, value: str, expected: int | None
) -> None:
    assert redis_table(tmp_path, f"min_replicas_acknowledged = {value}\n").min_replicas == expected


@pytest.mark.parametrize("value", ['"all"', "-1", "1.5", "true", "101"])
def test_other_replica_counts_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="min_replicas_acknowledged"):
        redis_table(tmp_path, f"min_replicas_acknowledged = {value}\n")


def test_replication_timeout_must_be_shorter_than_timeout(tmp_path: Path) -> None:
    """WAIT holds the connection: the socket must not give up before Redis answers."""
    assert redis_table(tmp_path, "replication_timeout = 0.2\n").replication_timeout == 0.2
    with pytest.raises(ConfigError, match="shorter than timeout"):
        redis_table(tmp_path, "timeout = 1.0\nreplication_timeout = 1.0\n")


def test_a_short_timeout_shortens_the_default_replication_timeout(tmp_path: Path) -> None:
    assert redis_table(tmp_path, "timeout = 0.5\n").replication_timeout == 0.25


def test_tls_files_are_read_by_name(tmp_path: Path) -> None:
    settings = redis_table(
        tmp_path,
        'url = "rediss://redis.example.test"\ntls_ca_file = "/etc/ssl/redis-ca.crt"\n'
        'tls_cert_file = "/etc/pbs/client.crt"\ntls_key_file = "/etc/pbs/client.key"\n',
    )
    assert settings.tls
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (
        "/etc/ssl/redis-ca.crt",
        "/etc/pbs/client.crt",
        "/etc/pbs/client.key",
    )


def test_a_tls_key_without_a_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_key_file needs tls_cert_file"):
        redis_table(tmp_path, 'tls_key_file = "/etc/pbs/client.key"\n')


def test_a_systemd_credential_supplies_the_tls_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-tls-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = redis_table(tmp_path, 'tls_cert_file = "/etc/pbs/client.crt"\n')
    assert settings.tls_key_file == str(credentials / "redis-tls-key")


def test_an_unknown_redis_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'sentinel'"):
        apply_redis({"sentinel": ["10.0.0.1"]}, RedisSettings())


def test_a_user_named_in_the_url_takes_the_password_from_a_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text("policy-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = redis_table(tmp_path, 'url = "unix://pbs-policy:@/run/redis/redis-server.sock"\n')
    assert (settings.username, settings.password) == ("pbs-policy", "policy-secret")
