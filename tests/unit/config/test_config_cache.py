"""The handler's cache of the parsed config file: only ever saves time, never serves an old file."""

from __future__ import annotations

import marshal
import os
import subprocess
from pathlib import Path

import pytest

from pbs_activated.config import ConfigError, defaults
from pbs_activated.config import load as loading
from pbs_activated.config.load import CACHE_FILE, load

PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def cache_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir()
    monkeypatch.setenv("CACHE_DIRECTORY", str(directory))
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    return directory


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def imports(config: Path, environment: dict[str, str], *modules: str) -> bool:
    """Load `config` in a fresh handler-like interpreter; tell whether it imported all `modules`."""
    code = (
        f"import sys; sys.path.append({str(REPO)!r}); from pbs_activated.config.load import load; "
        f"load({str(config)!r}); print(all(m in sys.modules for m in {modules!r}))"
    )
    result = subprocess.run(
        [PYTHON, "-I", "-S", "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip() == "True"


def imports_tomllib(config: Path, environment: dict[str, str]) -> bool:
    return imports(config, environment, "tomllib")


def test_nothing_is_cached_without_a_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = write(tmp_path / "c.toml", '[redis]\nurl = "redis://192.0.2.1:6390/0"\n')
    assert load(str(config)).redis.port == 6390
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.toml"]


def test_the_parse_is_cached_private_to_the_service(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", '[redis]\nurl = "redis://:secret@192.0.2.1:6390/0"\n')
    assert load(str(config)).redis.password == "secret"
    assert (cache_directory / CACHE_FILE).stat().st_mode & 0o777 == 0o600
    assert load(str(config)).redis.password == "secret"


def test_a_cached_file_is_read_without_tomllib(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", '[redis]\nurl = "redis://192.0.2.1:6390/0"\n')
    environment = {"CACHE_DIRECTORY": str(cache_directory)}
    assert imports_tomllib(config, environment)
    assert not imports_tomllib(config, environment)


def test_a_file_of_comments_is_read_without_tomllib(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '# [redis]\n#url = "redis://x"\n\n   # note\n')
    assert not imports_tomllib(config, {})
    assert load(str(config)).redis.url == defaults.REDIS_URL


def test_an_edit_of_the_same_size_is_seen_at_once(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", '[redis]\nurl = "redis://192.0.2.1:6390/0"\n')
    status = config.stat()
    assert load(str(config)).redis.port == 6390
    write(config, '[redis]\nurl = "redis://192.0.2.1:6391/0"\n')
    os.utime(config, ns=(status.st_atime_ns, status.st_mtime_ns))  # even with the old mtime
    assert load(str(config)).redis.port == 6391


def test_a_replaced_file_is_seen_at_once(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", "[authorization]\nlifetime = 600\n")
    assert load(str(config)).authorization.lifetime == 600
    replacement = write(tmp_path / "new.toml", "[authorization]\nlifetime = 900\n")
    replacement.replace(config)
    assert load(str(config)).authorization.lifetime == 900


def test_another_config_path_does_not_get_the_cached_parse(
    tmp_path: Path, cache_directory: Path
) -> None:
    first = write(tmp_path / "a.toml", "[authorization]\nlifetime = 600\n")
    second = write(tmp_path / "b.toml", "[authorization]\nlifetime = 900\n")
    assert load(str(first)).authorization.lifetime == 600
    assert load(str(second)).authorization.lifetime == 900


def test_a_corrupt_cache_is_ignored_and_replaced(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", "[authorization]\nlifetime = 600\n")
    (cache_directory / CACHE_FILE).write_bytes(b"\x00garbage")
    assert load(str(config)).authorization.lifetime == 600
    assert load(str(config)).authorization.lifetime == 600
    assert (cache_directory / CACHE_FILE).read_bytes() != b"\x00garbage"


def test_a_broken_file_is_never_cached(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", "[redis\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            load(str(config))
    assert not (cache_directory / CACHE_FILE).exists()


def test_a_refused_value_is_refused_on_every_load_and_never_cached(
    tmp_path: Path, cache_directory: Path
) -> None:
    config = write(tmp_path / "c.toml", "[authorization]\nlifetime = 0\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="lifetime"):
            load(str(config))
    assert not (cache_directory / CACHE_FILE).exists()


def test_a_cached_file_is_read_without_its_checks(tmp_path: Path, cache_directory: Path) -> None:
    """The table, its checks and the URL parser run once per change of the file."""
    config = write(tmp_path / "c.toml", '[redis]\nurl = "redis://192.0.2.1:6390/0"\n')
    environment = {"CACHE_DIRECTORY": str(cache_directory)}
    modules = [
        "pbs_activated.config.table",
        "pbs_activated.config.check",
        "pbs_activated.config.storeurl",
    ]
    assert imports(config, environment, *modules)
    for module in modules:
        assert not imports(config, environment, module)


def test_a_cached_load_equals_a_fresh_one(tmp_path: Path, cache_directory: Path) -> None:
    """Every setting, whichever way it was set: a key, the URL, a rule, a default."""
    config = write(
        tmp_path / "c.toml",
        '[redis]\nurl = "rediss://u:p%40ss@192.0.2.1:6390/3"\ntimeout = 4\n'
        'sentinels = ["192.0.2.5", "[2001:db8::5]:26380"]\n'
        '[authorization]\nignore = ["10.0.0.0/8"]\n[policy]\nauthorized = "OK relayed"\n'
        '[journal]\nservers = ["courier"]\n',
    )

    def settings(section: object) -> dict[str, object]:
        return {name: getattr(section, name) for name in type(section).__slots__}

    fresh, cached = load(str(config)), load(str(config))
    assert (cache_directory / CACHE_FILE).exists()
    for section in ("redis", "authorization", "policy", "journal"):
        assert settings(getattr(cached, section)) == settings(getattr(fresh, section))
    assert cached.redis.sentinels == (("192.0.2.5", 26379), ("2001:db8::5", 26380))
    assert cached.redis.min_replicas == 1 and cached.redis.replication_timeout == 0.5


def test_a_cache_of_another_package_version_is_parsed_again(
    tmp_path: Path, cache_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the checks make of a file is the code's to say: an upgrade checks it again."""
    config = write(tmp_path / "c.toml", "[authorization]\nlifetime = 600\n")
    monkeypatch.setattr(loading, "__version__", "0.0.1")
    assert load(str(config)).authorization.lifetime == 600
    cached = marshal.loads((cache_directory / CACHE_FILE).read_bytes())
    cached[2]["authorization"]["lifetime"] = 1  # what the old version would have made of it
    (cache_directory / CACHE_FILE).write_bytes(marshal.dumps(cached))
    assert load(str(config)).authorization.lifetime == 1
    monkeypatch.undo()
    assert load(str(config)).authorization.lifetime == 600


def test_secrets_are_read_on_every_load(tmp_path: Path, cache_directory: Path) -> None:
    secret = write(tmp_path / "password", "first\n")
    config = write(tmp_path / "c.toml", f'[redis]\npassword_file = "{secret}"\n')
    assert load(str(config)).redis.password == "first"
    write(secret, "second\n")
    assert load(str(config)).redis.password == "second"
    assert b"first" not in (cache_directory / CACHE_FILE).read_bytes()


def test_an_unwritable_cache_directory_costs_only_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "missing"))
    config = write(tmp_path / "c.toml", "[authorization]\nlifetime = 600\n")
    assert load(str(config)).authorization.lifetime == 600


def test_a_file_with_a_bad_network_is_never_cached(tmp_path: Path, cache_directory: Path) -> None:
    config = write(tmp_path / "c.toml", '[authorization]\nignore = ["10.0.0.0/33"]\n')
    for _ in range(2):
        with pytest.raises(ConfigError, match="not a network"):
            load(str(config))
    assert not (cache_directory / CACHE_FILE).exists()


def test_a_cached_file_is_read_without_ipaddress(tmp_path: Path, cache_directory: Path) -> None:
    """The networks were checked when the file was parsed: the handler never pays for it."""
    config = write(tmp_path / "c.toml", '[authorization]\nignore = ["10.0.0.0/8"]\n')
    environment = {"CACHE_DIRECTORY": str(cache_directory)}
    assert imports(config, environment, "ipaddress")
    assert not imports(config, environment, "ipaddress")


@pytest.mark.parametrize("format_", [1, 2])
def test_a_cache_of_a_previous_format_is_parsed_again(
    tmp_path: Path, cache_directory: Path, format_: int
) -> None:
    """Format 1 cached files whose networks were never checked, 2 their unchecked tables."""
    config = write(tmp_path / "c.toml", '[authorization]\nignore = ["10.0.0.0/33"]\n')
    status = config.stat()
    key = (str(config), status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
    tables = {"authorization": {"ignore": ["10.0.0.0/33"]}}
    (cache_directory / CACHE_FILE).write_bytes(
        marshal.dumps((f"pbs-activated config cache {format_}", key, tables))
    )
    with pytest.raises(ConfigError, match="not a network"):
        load(str(config))
