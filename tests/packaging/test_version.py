"""The version has one home, pyproject.toml; everything that names it must agree."""

from __future__ import annotations

import re

from debpackage import project_version, run
from support import REPO


def test_debian_changelog_names_the_pyproject_version() -> None:
    result = run(
        ["dpkg-parsechangelog", "-l", str(REPO / "packaging/debian/changelog"), "-S", "Version"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == project_version()


def test_package_version_attribute_is_the_pyproject_version() -> None:
    text = (REPO / "pbs_activated/__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match is not None
    assert match.group(1) == project_version()


def test_man_pages_name_the_pyproject_version() -> None:
    for page in ("docs/pbs-activated.8", "docs/pbs-activated.toml.5"):
        header = (REPO / page).read_text().splitlines()[0]
        assert f'"pbs-activated {project_version()}"' in header, page
