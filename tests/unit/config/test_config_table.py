"""config.table.TABLE is the config: its keys are the known ones, its defaults the settings'."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbs_activated.config import SECTIONS, Config, ConfigError
from pbs_activated.config.check import apply
from pbs_activated.config.load import load
from pbs_activated.config.table import SET_BY_RULES, TABLE, number_text

KEYS = [(section, name) for section, keys in TABLE.items() for name in keys]
BOUNDED = [
    (section, name)
    for section, name in KEYS
    if len(TABLE[section][name][2]) == 2 and isinstance(TABLE[section][name][2][0], int | float)
]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pbs-activated.toml"
    path.write_text(text)
    return str(path)


def test_the_table_has_a_dict_of_keys_for_each_section_of_config() -> None:
    assert tuple(TABLE) == SECTIONS
    for section in SECTIONS:
        assert hasattr(Config(), section)


@pytest.mark.parametrize(("section", "name"), [key for key in KEYS if key[1] not in SET_BY_RULES])
def test_a_fresh_config_holds_the_tables_default(section: str, name: str) -> None:
    assert getattr(getattr(Config(), section), name) == TABLE[section][name][1]


@pytest.mark.parametrize(("section", "name"), KEYS)
def test_each_key_has_a_one_line_doc(section: str, name: str) -> None:
    doc = TABLE[section][name][3]
    assert doc and "\n" not in doc and doc.endswith(".")


@pytest.mark.parametrize(("section", "name"), KEYS)
def test_a_value_of_the_wrong_type_is_refused_with_the_keys_name(section: str, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{section}\] {name}"):
        apply(Config(), {section: {name: [[]]}})


@pytest.mark.parametrize("section", SECTIONS)
def test_a_key_the_table_lacks_is_refused_by_name(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{section}\] unknown key 'colour'"):
        apply(Config(), {section: {"colour": 1}})


@pytest.mark.parametrize(("section", "name"), BOUNDED)
def test_numbers_are_accepted_at_their_bounds_and_refused_beyond(
    tmp_path: Path, section: str, name: str
) -> None:
    low, high = TABLE[section][name][2]
    assert isinstance(low, int | float) and isinstance(high, int | float)
    extra = "timeout = 60\n" if name == "replication_timeout" else ""  # must stay below it
    for value in (low, high if name != "replication_timeout" else 59):
        load(write(tmp_path, f"[{section}]\n{extra}{name} = {value!r}\n"))
    for value in (low - 1 if isinstance(low, int) else low / 2, high + 1):
        with pytest.raises(ConfigError, match=name):
            load(write(tmp_path, f"[{section}]\n{extra}{name} = {value!r}\n"))


def test_bounds_are_written_as_the_man_page_writes_them() -> None:
    assert [number_text(value) for value in (604800, 0.05, 60, 1 << 24)] == [
        "604800",
        "0.05",
        "60",
        "16777216",
    ]
    with pytest.raises(ConfigError, match="between 256 and 1048576"):
        apply(Config(), {"policy": {"max_line_length": 1 << 21}})


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [("redis", "credentials", "mine"), ("journal", "formats", ["exim"])],
)
def test_a_word_outside_the_choices_is_refused(section: str, name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        apply(Config(), {section: {name: value}})


def test_the_rule_keys_set_no_attribute_of_their_own() -> None:
    redis = Config().redis
    for name in SET_BY_RULES:
        assert name in TABLE["redis"] and not hasattr(redis, name)


def test_a_file_of_section_headers_alone_means_defaults(tmp_path: Path) -> None:
    """The file as shipped has its section headers and every key commented out."""
    config = load(write(tmp_path, "[redis]\n[authorization]\n[policy]\n[journal]\n"))
    assert config.policy.unauthorized == "DUNNO"
    with pytest.raises(ConfigError, match="unknown section"):
        load(write(tmp_path, "[redis]\n[polcy]\n"))
