"""Debian's own package checker finds nothing wrong with the .deb."""

from __future__ import annotations

from pathlib import Path

from debpackage import run


def test_lintian_reports_no_error_and_no_warning(deb: Path) -> None:
    result = run(
        ["lintian", "--fail-on", "error,warning", "--display-level", ">=warning", str(deb)]
    )
    complaints = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
