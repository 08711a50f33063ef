"""The man pages render cleanly and document every command and option of the CLI.

The commands and options are asked of the command itself (`--help`), so one added
to cli.py without a word in pbs-activated(8) fails here.
"""

from __future__ import annotations

import re

import pytest
from debpackage import run
from support import PYTHON, REPO

PAGES = ("docs/pbs-activated.8", "docs/pbs-activated.toml.5")
COMMAND_PAGE = REPO / "docs/pbs-activated.8"


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
    code = "".join(path.read_text() for path in (REPO / "pbs_activated").glob("*.py"))
    return set(re.findall(r"\b(PBS_[A-Z_]+)=", code))


def test_the_code_writes_audit_fields_to_document() -> None:
    assert {"PBS_USER", "PBS_CLIENT_ADDRESS", "PBS_ACTION"} <= audit_fields()


@pytest.mark.parametrize("field", sorted(audit_fields()))
def test_command_page_documents_the_audit_field(field: str) -> None:
    assert re.search(rf"^\.BR? .*\b{field}\b", COMMAND_PAGE.read_text(), re.MULTILINE)
