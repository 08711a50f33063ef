"""The Postfix line we recommend has one home (pbs_activated.admin.postfix): every text shows it.

The booted-system tests and the demo configure Postfix from that module itself,
so what the README and the man page tell an administrator is what was tested.
"""

from __future__ import annotations

import re
from pathlib import Path

from pbs_activated.admin import postfix

REPO = Path(__file__).resolve().parents[2]


def unroff(text: str) -> str:
    """The man page's text as a reader sees it: escapes and font requests dropped."""
    text = text.replace("\\-", "-").replace("\\(aq", "'")
    return "\n".join(line for line in text.splitlines() if not line.startswith("."))


def test_the_readme_shows_the_line() -> None:
    assert postfix.main_cf() in (REPO / "README.md").read_text()


def test_the_man_page_shows_the_line() -> None:
    assert postfix.main_cf() in unroff((REPO / "docs" / "pbs-activated.8").read_text())


def test_no_text_shows_the_bare_restriction_without_our_settings() -> None:
    """A leftover `check_policy_service unix:private/pbs-policy,` would send an
    administrator back to Postfix's 451-for-everyone default. (Prose that names
    the restriction, as doctor's findings do, is not a line to copy.)"""
    bare = re.compile(r"check_policy_service\s+unix:private/pbs\\?-policy\s*(,|$)", re.M)
    for path in [REPO / "README.md", REPO / "docs" / "pbs-activated.8", *REPO.glob("docs/*.md")]:
        assert not bare.search(path.read_text()), path


def test_the_system_tests_and_the_demo_configure_postfix_from_the_module() -> None:
    for name in ("mailhost.py", "demo.py"):
        text = (REPO / "tests" / "system" / name).read_text()
        assert "postfix.relay_restrictions(" in text, name
        assert "check_policy_service {" not in text, name


def test_the_line_has_the_settings_issue_13_asks_for() -> None:
    line = postfix.restriction()
    assert line.startswith("check_policy_service { unix:private/pbs-policy, ")
    assert "default_action=DEFER_IF_REJECT," in line  # no text: that would need braces
    assert re.search(r"timeout=\d+s", line)
    assert re.search(r"max_idle=\d+s", line)
