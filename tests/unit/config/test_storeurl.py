"""A Redis URL's query: `db` is ours, any other parameter is refused as an unknown key is."""

from __future__ import annotations

import pytest

from pbs_activated.config import ConfigError, RedisSettings
from pbs_activated.config.storeurl import parse_redis_url


def parsed(url: str) -> RedisSettings:
    settings = RedisSettings()
    parse_redis_url(url, settings)
    return settings


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("unix:///run/redis.sock?db=4", 4),
        ("unix:///run/redis.sock?db=4&", 4),
        ("redis://localhost?db=5", 5),
        ("redis://localhost/6?db=5", 6),  # the path wins, as in redis-py
    ],
)
def test_the_db_parameter_chooses_the_database(url: str, db: int) -> None:
    assert parsed(url).db == db


def test_an_unknown_query_parameter_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown query parameter 'socket_timeout' \(only db\)"):
        parsed("unix:///run/redis.sock?db=1&socket_timeout=5")


def test_every_unknown_query_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="'health_check_interval', 'dbb'"):
        parsed("redis://localhost:6379?health_check_interval=3&dbb=1")


def test_the_refusal_of_a_query_does_not_repeat_the_password() -> None:
    with pytest.raises(ConfigError) as refusal:
        parsed("redis://:s3cret@localhost?ssl_cert_reqs=none")
    assert "s3cret" not in str(refusal.value)


def test_a_tcp_url_replaces_a_socket_path_set_before() -> None:
    settings = parsed("unix:///run/redis.sock")
    parse_redis_url("redis://192.0.2.7:6390", settings)
    assert (settings.unix_path, settings.host, settings.port) == ("", "192.0.2.7", 6390)


def test_a_url_without_host_or_port_means_the_default_address() -> None:
    settings = parsed("redis://")
    assert (settings.host, settings.port) == ("127.0.0.1", 6379)
    assert (RedisSettings().host, RedisSettings().port) == (settings.host, settings.port)
