"""The shipped conffile documents every key the parser accepts, each with its default.

Which keys exist is asked of the parser itself, not copied here: every name that
appears in config.py (or in the conffile) is offered to it with a value of the
wrong type, and a key it knows complains about the value, an unknown one about
the key. So a key added to config.py without a line in the conffile fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from support import REPO

from pbs_activated import config

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


def candidate_names() -> set[str]:
    """Every identifier-like string constant in config.py, plus the conffile's names."""
    tree = ast.parse(Path(config.__file__).read_text())
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[a-z][a-z0-9_]*", node.value)
    }
    for section, keys in conffile_keys().items():
        names |= keys | {section}
    return names


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    return config.load(str(path))


def accepted_sections(tmp_path: Path) -> set[str]:
    accepted = set()
    for name in candidate_names():
        try:
            load_text(tmp_path, f"[{name}]\n")
        except config.ConfigError as error:
            assert "unknown section" in str(error), error
            continue
        accepted.add(name)
    return accepted


def accepted_keys(tmp_path: Path, section: str) -> set[str]:
    """The keys of `section` the parser knows: offered a wrong value, they complain about it."""
    accepted = set()
    for name in candidate_names():
        try:
            load_text(tmp_path, f"[{section}]\n{name} = [[]]\n")
        except config.ConfigError as error:
            if "unknown key" in str(error):
                continue
        accepted.add(name)
    return accepted


def every_default_uncommented() -> str:
    """The conffile with each `#key = default` line made live."""
    lines = CONFFILE.read_text().splitlines()
    return "\n".join(line[1:] if DEFAULT_LINE.match(line) else line for line in lines) + "\n"


def settings_of(loaded: config.Config) -> dict[str, dict[str, object]]:
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


def test_conffile_has_every_section_the_parser_accepts(tmp_path: Path) -> None:
    assert set(conffile_keys()) == accepted_sections(tmp_path)


@pytest.mark.parametrize("section", sorted(conffile_keys()))
def test_conffile_shows_every_key_the_parser_accepts(tmp_path: Path, section: str) -> None:
    missing = accepted_keys(tmp_path, section) - conffile_keys()[section]
    assert not missing, f"[{section}] keys missing from {CONFFILE.name}: {sorted(missing)}"


def test_conffile_as_shipped_means_every_default(tmp_path: Path) -> None:
    shipped = config.load(str(CONFFILE))
    assert settings_of(shipped) == settings_of(config.load(str(tmp_path / "missing.toml")))


def test_conffile_values_shown_are_the_builtin_defaults(tmp_path: Path) -> None:
    uncommented = load_text(tmp_path, every_default_uncommented())
    assert settings_of(uncommented) == settings_of(config.load(str(tmp_path / "missing.toml")))


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
