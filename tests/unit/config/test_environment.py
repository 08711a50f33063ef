"""defaults.environment: os.environ's answer, with or without os imported."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pbs_activated.config.defaults import environment

PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[3]


def test_with_os_loaded_it_follows_changes_made_through_os(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBS_TEST_VARIABLE", "/etc/changed.toml")
    assert environment("PBS_TEST_VARIABLE") == "/etc/changed.toml"
    monkeypatch.delenv("PBS_TEST_VARIABLE")
    assert environment("PBS_TEST_VARIABLE") is None


def test_without_os_it_reads_what_os_would_have() -> None:
    """In a handler-like interpreter: set, empty, missing, and bytes that are not UTF-8."""
    names = ["PBS_SET", "PBS_EMPTY", "PBS_MISSING", "PBS_BYTES"]
    code = (
        f"import sys; sys.path.append({str(REPO)!r}); names = {names!r}\n"
        "from pbs_activated.config.defaults import environment\n"
        "got = [environment(n) for n in names]; loaded = 'os' in sys.modules\n"
        "import os\n"
        "print(ascii(got)); print(ascii([os.environ.get(n) for n in names])); print(loaded)"
    )
    result = subprocess.run(
        [PYTHON, "-I", "-S", "-c", code],
        env={b"PBS_SET": b"/run/x.sock", b"PBS_EMPTY": b"", b"PBS_BYTES": b"/tmp/\xff\xe9"},
        capture_output=True,
        text=True,
        check=True,
    )
    ours, theirs, loaded = result.stdout.splitlines()
    assert loaded == "False"  # what was asked was posix.environ, not os
    assert ours == theirs
    assert ours == ascii(["/run/x.sock", "", None, "/tmp/\udcff\udce9"])
