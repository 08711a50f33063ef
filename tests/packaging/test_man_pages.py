"""The man pages render cleanly and document every command, option and key.

The commands and options are asked of the command itself (`--help`), so one added
to admin/cli.py without a word in pbs-activated(8) fails here; the keys, their defaults
and bounds are config.table.TABLE's, so a key added there without its entry in
pbs-activated.toml(5), or an entry whose default or bounds differ, fails here.
"""

from __future__ import annotations

import json
import re

import pytest
from debpackage import run
from support import PYTHON, REPO

from pbs_activated.config.table import TABLE

PAGES = ("docs/pbs-activated.8", "docs/pbs-activated.toml.5")
COMMAND_PAGE = REPO / "docs/pbs-activated.8"
TOML_PAGE = REPO / "docs/pbs-activated.toml.5"


def help_text(*command: str) -> str:
    result = run([PYTHON, "-m", "pbs_activated", *command, "--help"], PYTHONPATH=str(REPO))
    assert result.returncode == 0, result.stderr
    return result.stdout


def subcommands() -> list[str]:
    """The COMMAND choices listed under the top-level help's positional arguments."""
    text = help_text()
    listing = text.split("COMMAND\n", 2)[-1].split("\n\n")[0]
    return re.findall(r"^    (\w[\w-]*)\s", listing, re.MULTILINE)


def long_options(*command: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text(*command))) - {"--help"}


def roff(text: str) -> str:
    """How a command-line word is written in roff: every `-` escaped."""
    return text.replace("-", r"\-")


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page: str) -> None:
    result = run(["man", "--warnings", "-E", "UTF-8", "-l", str(REPO / page)], MANWIDTH="80")
    assert result.returncode == 0
    assert result.stderr == ""


def test_the_cli_has_commands_to_document() -> None:
    assert {"policy", "journal", "grant", "revoke", "list", "check"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_command_page_documents_the_subcommand(command: str) -> None:
    assert re.search(rf"^\.(B|BR|BI) {command}\b", COMMAND_PAGE.read_text(), re.MULTILINE)


@pytest.mark.parametrize("command", ["", *subcommands()])
def test_command_page_documents_every_long_option(command: str) -> None:
    page = COMMAND_PAGE.read_text()
    missing = [
        option for option in long_options(*filter(None, [command])) if roff(option) not in page
    ]
    assert not missing, f"pbs-activated {command}: {missing} not in pbs-activated(8)"


def audit_fields() -> set[str]:
    """Every journal field the code writes: `PBS_NAME=` keyword arguments of audit.send."""
    code = "".join(path.read_text() for path in (REPO / "pbs_activated").rglob("*.py"))
    return set(re.findall(r"\b(PBS_[A-Z_]+)=", code))


def test_the_code_writes_audit_fields_to_document() -> None:
    assert {"PBS_USER", "PBS_CLIENT_ADDRESS", "PBS_ACTION"} <= audit_fields()


@pytest.mark.parametrize("field", sorted(audit_fields()))
def test_command_page_documents_the_audit_field(field: str) -> None:
    assert re.search(rf"^\.BR? .*\b{field}\b", COMMAND_PAGE.read_text(), re.MULTILINE)


def roff_arguments(line: str) -> list[str]:
    """A macro line's arguments: split at spaces, `"..."` one argument (`""` a quote in it)."""
    arguments: list[str] = []
    rest = line.split(" ", 1)[1] if " " in line else ""
    while rest:
        if rest.startswith(" "):
            rest = rest[1:]
        elif rest.startswith('"'):
            match = re.match(r'"((?:[^"]|"")*)"?', rest)
            assert match, line
            arguments.append(match.group(1).replace('""', '"'))
            rest = rest[match.end() :]
        else:
            word, _, rest = rest.partition(" ")
            arguments.append(word)
    return arguments


def plain(roff_text: str) -> str:
    """roff's escapes as the reader sees them."""
    for escape, text in (("\\(dq", '"'), ("\\(aq", "'"), ("\\-", "-"), ("\\e", "\\")):
        roff_text = roff_text.replace(escape, text)
    return re.sub(r"\\f[BIRP]", "", roff_text)


def documented_keys() -> dict[str, dict[str, str]]:
    """Section -> key -> what its entry's tag says in parentheses (`string, default "x"`)."""
    keys: dict[str, dict[str, str]] = {}
    section = ""
    tag_follows = False
    for line in TOML_PAGE.read_text().splitlines():
        if match := re.fullmatch(r'\.SH "\[(\w+)\]"', line):
            section = match.group(1)
            keys[section] = {}
        elif line.startswith(".SH"):
            section = ""
        elif line == ".TP":
            tag_follows = True
            continue
        elif tag_follows and section:
            tag = plain("".join(roff_arguments(line)))
            match = re.fullmatch(r"(\w+) \((.*)\)", tag)
            assert match, f"[{section}] an entry's tag is not `key (..., default ...)`: {tag}"
            keys[section][match.group(1)] = match.group(2)
        tag_follows = False
    return keys


EMPTY = object()
"""What `default empty` says: an empty string or an empty list."""


def shown_default(description: str) -> tuple[object, str]:
    """The default a tag shows, and the rest of the tag (which may show the bounds)."""
    before, marker, rest = description.partition("default ")
    assert marker, f"no default in ({description})"
    if rest.startswith('"'):
        end = rest.index('"', 1)
        return rest[1:end], before + rest[end + 1 :]
    if rest.startswith("["):
        end = rest.index("]") + 1
        return tuple(json.loads(rest[:end])), before + rest[end:]
    text = rest.split(",")[0].strip()
    remainder = before + rest[len(text) :]
    if text == "empty":
        return EMPTY, remainder
    if text in ("true", "false"):
        return text == "true", remainder
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text), remainder
    return text, remainder


TABLE_KEYS = [(section, name) for section, keys in TABLE.items() for name in keys]


def test_toml_page_has_a_section_for_each_of_the_table() -> None:
    assert list(documented_keys()) == list(TABLE)


@pytest.mark.parametrize("section", list(TABLE))
def test_toml_page_documents_every_key_of_the_table_and_no_other(section: str) -> None:
    documented = set(documented_keys()[section])
    assert not set(TABLE[section]) - documented, f"[{section}] keys missing from the page"
    assert not documented - set(TABLE[section]), f"[{section}] keys the table lacks"


@pytest.mark.parametrize(("section", "name"), TABLE_KEYS)
def test_toml_page_shows_the_tables_default(section: str, name: str) -> None:
    shown, _ = shown_default(documented_keys()[section][name])
    default = TABLE[section][name][1]
    if shown is EMPTY:
        assert default in (
            "",
            (),
        ), f"[{section}] {name}: the page says empty, the table {default!r}"
    else:
        assert shown == default


@pytest.mark.parametrize(
    ("section", "name"),
    [
        (section, name)
        for section, name in TABLE_KEYS
        if re.search(r"\d", str(TABLE[section][name][2]))
    ],
)
def test_toml_page_shows_the_tables_bounds(section: str, name: str) -> None:
    _, rest = shown_default(documented_keys()[section][name])
    bounds = re.search(r"(\d[\d.]*) to (\d[\d.]*)", rest)
    assert bounds, f"[{section}] {name}: no bounds shown in ({rest})"
    assert tuple(float(bound) for bound in bounds.groups()) == TABLE[section][name][2]
