"""The shipped conffile shows every key of config.table.TABLE, and no other, with its default.

Which keys exist is the table's to say, and `apply` knows no other: a key added
to the table without a line in the conffile, or a line whose key or default the
table does not have, fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from support import REPO

from pbs_activated.config import Config
from pbs_activated.config.load import load
from pbs_activated.config.table import TABLE

CONFFILE = REPO / "packaging/pbs-activated.toml"
MAN_PAGE = REPO / "docs/pbs-activated.toml.5"

DEFAULT_LINE = re.compile(r"^#([a-z_]+) = (.*)$")
"""How the conffile shows a key with its default: `#key = value`, no space after `#`."""

SECTION_LINE = re.compile(r"^\[([a-z_]+)\]$")


def conffile_keys() -> dict[str, set[str]]:
    """Section name -> keys shown in the conffile."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in CONFFILE.read_text().splitlines():
        if match := SECTION_LINE.match(line):
            section = match.group(1)
            keys[section] = set()
        elif match := DEFAULT_LINE.match(line):
            assert section, f"key before any section: {line}"
            keys[section].add(match.group(1))
    return keys


def conffile_defaults() -> dict[tuple[str, str], object]:
    """(section, key) -> the default the conffile shows, as TOML reads it (a list as a tuple)."""
    shown: dict[tuple[str, str], object] = {}
    section = ""
    for line in CONFFILE.read_text().splitlines():
        if match := SECTION_LINE.match(line):
            section = match.group(1)
        elif match := DEFAULT_LINE.match(line):
            value = tomllib.loads(f"value = {match.group(2)}")["value"]
            shown[section, match.group(1)] = tuple(value) if isinstance(value, list) else value
    return shown


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    return load(str(path))


def every_default_uncommented() -> str:
    """The conffile with each `#key = default` line made live."""
    lines = CONFFILE.read_text().splitlines()
    return "\n".join(line[1:] if DEFAULT_LINE.match(line) else line for line in lines) + "\n"


def settings_of(loaded: Config) -> dict[str, dict[str, object]]:
    return {
        section: {
            slot: getattr(getattr(loaded, section), slot)
            for slot in type(getattr(loaded, section)).__slots__
        }
        for section in ("redis", "authorization", "policy", "journal")
    }


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from a surrounding unit would change what the defaults resolve to."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_conffile_has_the_sections_of_the_table_in_its_order() -> None:
    assert list(conffile_keys()) == list(TABLE)


@pytest.mark.parametrize("section", sorted(TABLE))
def test_conffile_shows_every_key_of_the_table(section: str) -> None:
    missing = set(TABLE[section]) - conffile_keys()[section]
    assert not missing, f"[{section}] keys missing from {CONFFILE.name}: {sorted(missing)}"


@pytest.mark.parametrize("section", sorted(TABLE))
def test_conffile_shows_no_key_the_table_lacks(section: str) -> None:
    unknown = conffile_keys()[section] - set(TABLE[section])
    assert not unknown, f"[{section}] keys in {CONFFILE.name} the table lacks: {sorted(unknown)}"


@pytest.mark.parametrize(
    ("section", "name"), [(section, name) for section, keys in TABLE.items() for name in keys]
)
def test_conffile_shows_the_tables_default(section: str, name: str) -> None:
    assert conffile_defaults()[section, name] == TABLE[section][name][1]


def test_conffile_as_shipped_means_every_default(tmp_path: Path) -> None:
    shipped = load(str(CONFFILE))
    assert settings_of(shipped) == settings_of(load(str(tmp_path / "missing.toml")))


def test_conffile_values_shown_are_the_builtin_defaults(tmp_path: Path) -> None:
    uncommented = load_text(tmp_path, every_default_uncommented())
    assert settings_of(uncommented) == settings_of(load(str(tmp_path / "missing.toml")))


def test_conffile_shows_each_key_once() -> None:
    lines = [line for line in CONFFILE.read_text().splitlines() if DEFAULT_LINE.match(line)]
    names = [line.split(" ")[0] for line in lines]
    assert len(names) == len(set(names))


def test_man_page_documents_every_key_of_the_conffile() -> None:
    page = MAN_PAGE.read_text()
    for section, keys in conffile_keys().items():
        assert f'.SH "[{section}]"' in page, section
        for key in keys:
            assert re.search(rf"^\.BR {key}\b", page, re.MULTILINE), f"[{section}] {key}"
