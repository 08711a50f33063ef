"""The reader's cursor file: whole or absent, never half written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbs_activated.reader.cursor import CursorFile, state_directory


def test_no_cursor_file_means_first_start(tmp_path: Path) -> None:
    assert CursorFile(str(tmp_path)).load() == ""


def test_saved_cursor_is_loaded_back(tmp_path: Path) -> None:
    CursorFile(str(tmp_path)).save("s=abc;i=1")
    assert CursorFile(str(tmp_path)).load() == "s=abc;i=1"


def test_save_replaces_by_rename_and_leaves_no_temporary(tmp_path: Path) -> None:
    cursor = CursorFile(str(tmp_path))
    cursor.save("s=abc;i=1")
    inode = (tmp_path / "cursor").stat().st_ino
    cursor.save("s=abc;i=2")
    assert (tmp_path / "cursor").stat().st_ino != inode
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cursor"]
    assert (tmp_path / "cursor").read_text() == "s=abc;i=2\n"


def test_cursor_file_is_private(tmp_path: Path) -> None:
    CursorFile(str(tmp_path)).save("s=abc;i=1")
    assert (tmp_path / "cursor").stat().st_mode & 0o077 == 0


def test_state_directory_is_systemds_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pbs-activated:/var/lib/other")
    assert state_directory() == "/var/lib/pbs-activated"


def test_state_directory_defaults_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert state_directory() == "/var/lib/pbs-activated"
