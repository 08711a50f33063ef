"""The config file: TOML, every key optional, wrong values refused with their name."""

from pathlib import Path

import pytest

from pbs_activated.config import AuthorizationSettings, ConfigError, defaults
from pbs_activated.config.load import config_path, load


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pbs-activated.toml"
    path.write_text(text)
    return str(path)


def test_a_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load(str(tmp_path / "absent.toml"))
    assert config.redis.host == "127.0.0.1" and config.redis.port == 6379 and config.redis.db == 0
    assert config.redis.unix_path == "/run/pbs-store/store.sock"  # the package's own store
    assert config.authorization.lifetime == defaults.LIFETIME
    assert config.policy.unauthorized == "DUNNO"


def test_a_file_of_comments_means_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, "# [redis]\n# url = 'x'\n"))
    assert config.redis.url == defaults.REDIS_URL


def test_the_documented_keys_are_read(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
[redis]
url = "unix:///run/redis/redis-server.sock?db=3"
timeout = 0.5
[authorization]
lifetime = 600
ignore = ["10.0.0.0/8"]
[policy]
unauthorized = "REJECT no"
idle_timeout = 400
""",
        )
    )
    assert config.redis.unix_path == "/run/redis/redis-server.sock" and config.redis.db == 3
    assert config.redis.timeout == 0.5
    assert config.authorization.lifetime == 600
    assert config.authorization.ignore == ("10.0.0.0/8",)
    assert config.policy.unauthorized == "REJECT no"
    assert config.policy.idle_timeout == 400


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379, False, "", "", 0)),
        ("redis://redis.example.test", ("redis.example.test", 6379, False, "", "", 0)),
        ("rediss://user:pa%3Ass@[::1]:6380/2", ("::1", 6380, True, "user", "pa:ss", 2)),
        ("redis://:secret@localhost/1", ("localhost", 6379, False, "", "secret", 1)),
    ],
)
def test_redis_urls_are_parsed(tmp_path: Path, url: str, expected: tuple[object, ...]) -> None:
    redis = load(write(tmp_path, f'[redis]\nurl = "{url}"\n')).redis
    assert (redis.host, redis.port, redis.tls, redis.username, redis.password, redis.db) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[redis]\nurl = "http://x"', "must start with"),
        ('[redis]\nurl = "unix://relative.sock"', "absolute"),
        ('[redis]\nurl = "redis://host:port"', "host:port"),
        ("[authorization]\nlifetime = 0", "lifetime must be between"),
        ('[authorization]\nlifetime = "30"', "lifetime must be a whole number"),
        ("[authorization]\nlifetme = 30", "unknown key 'lifetme'"),
        ("[polcy]\n", "unknown section"),
        ('[policy]\nunauthorized = "OK"', "must never permit"),
        ('[policy]\nunavailable = "ok fine"', "must never permit"),
        ('[policy]\nauthorized = ""', "one non-empty line"),
        ("[redis\n", "pbs-activated.toml"),
    ],
)
def test_wrong_values_are_refused_with_their_name(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load(write(tmp_path, text))


def test_the_password_file_keeps_the_secret_out_of_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    config = load(write(tmp_path, f'[redis]\npassword_file = "{secret}"\n'))
    assert config.redis.password == "s3cret"


def test_a_systemd_credential_supplies_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "redis-password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load(str(tmp_path / "absent.toml")).redis.password == "from-credential"


def test_the_config_path_comes_from_option_environment_or_debian(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(defaults.CONFIG_ENVIRONMENT, raising=False)
    assert config_path(None) == "/etc/pbs-activated/pbs-activated.toml"
    monkeypatch.setenv(defaults.CONFIG_ENVIRONMENT, "/tmp/env.toml")
    assert config_path(None) == "/tmp/env.toml"
    assert config_path("/tmp/option.toml") == "/tmp/option.toml"


def component_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What pbs-policy@.service hands the handler: its ACL user and that user's secret."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "store-user").write_text("pbs-policy")
    (credentials / "store-password").write_text("policy-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))


def test_the_packages_store_is_reached_as_the_units_own_acl_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component_credentials(tmp_path, monkeypatch)
    redis = load(str(tmp_path / "absent.toml")).redis
    assert (redis.username, redis.password) == ("pbs-policy", "policy-secret")


def test_a_url_set_by_the_administrator_keeps_its_own_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component_credentials(tmp_path, monkeypatch)
    redis = load(write(tmp_path, '[redis]\nurl = "redis://:open@127.0.0.1:6379/0"\n')).redis
    assert (redis.username, redis.password) == ("", "open")


def test_credentials_component_uses_the_acl_user_with_any_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component_credentials(tmp_path, monkeypatch)
    text = '[redis]\nurl = "redis://192.0.2.5:6379/0"\ncredentials = "component"\n'
    redis = load(write(tmp_path, text)).redis
    assert (redis.username, redis.password) == ("pbs-policy", "policy-secret")


def test_credentials_url_ignores_the_acl_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component_credentials(tmp_path, monkeypatch)
    redis = load(write(tmp_path, '[redis]\ncredentials = "url"\n')).redis
    assert (redis.username, redis.password) == ("", "")


def test_an_unknown_credentials_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="credentials must be"):
        load(write(tmp_path, '[redis]\ncredentials = "mine"\n'))


def test_the_default_url_written_out_is_still_the_packages_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    component_credentials(tmp_path, monkeypatch)
    redis = load(write(tmp_path, f'[redis]\nurl = "{defaults.REDIS_URL}"\n')).redis
    assert redis.own_store()
    assert (redis.username, redis.password) == ("pbs-policy", "policy-secret")


def test_the_handlers_unit_names_its_acl_user_and_secret_file_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials: systemd would build them for every connection."""
    secret = tmp_path / "pbs-policy"
    secret.write_text("policy-secret\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("PBS_ACTIVATED_STORE_USER", "pbs-policy")
    monkeypatch.setenv("PBS_ACTIVATED_STORE_PASSWORD_FILE", str(secret))
    redis = load(str(tmp_path / "absent.toml")).redis
    assert (redis.username, redis.password) == ("pbs-policy", "policy-secret")


def test_the_environment_names_no_user_for_a_store_the_site_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBS_ACTIVATED_STORE_USER", "pbs-policy")
    redis = load(write(tmp_path, '[redis]\nurl = "redis://127.0.0.1:6379/0"\n')).redis
    assert redis.username == ""


@pytest.mark.parametrize("network", ["10.0.0.0/33", "not-a-network", "2001:db8::/129"])
def test_a_bad_network_to_ignore_is_refused_by_name_whoever_loads_the_file(
    tmp_path: Path, network: str
) -> None:
    with pytest.raises(ConfigError, match=rf"\[authorization\] ignore: not a network: '{network}'"):
        load(write(tmp_path, f'[authorization]\nignore = ["127.0.0.0/8", "{network}"]\n'))


def test_the_networks_to_ignore_are_given_parsed_to_the_reader(tmp_path: Path) -> None:
    text = '[authorization]\nignore = ["192.0.2.1/24", "2001:db8::/32"]\n'
    networks = load(write(tmp_path, text)).authorization.networks()
    assert [str(network) for network in networks] == ["192.0.2.0/24", "2001:db8::/32"]


def test_the_default_networks_to_ignore_are_loopback(tmp_path: Path) -> None:
    networks = load(str(tmp_path / "absent.toml")).authorization.networks()
    assert [str(network) for network in networks] == ["127.0.0.0/8", "::1/128"]


def test_networks_set_by_hand_are_checked_when_asked_for() -> None:
    authorization = AuthorizationSettings()
    authorization.ignore = ("192.0.2.300/32",)
    with pytest.raises(ConfigError, match="192.0.2.300"):
        authorization.networks()


def test_an_ignore_of_the_wrong_type_is_refused_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[authorization\] ignore must be a list of strings"):
        load(write(tmp_path, '[authorization]\nignore = "10.0.0.0/8"\n'))
