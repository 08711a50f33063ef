"""`[journal] servers` names the mail servers; `units` and `formats` override what it implies."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbs_activated.config import ConfigError, JournalSettings
from pbs_activated.config.load import load
from pbs_activated.reader.logins.parser import SERVERS, LoginParser

COURIER_UNITS = (
    "courier-pop.service",
    "courier-pop-ssl.service",
    "courier-imap.service",
    "courier-imap-ssl.service",
)
COURIER_LOGIN = "LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[46927]"
CYRUS_LOGIN = "login: [192.0.2.10] alice plaintext User logged in SESSIONID=<cyrus-1-2-3-4>"


def journal_of(tmp_path: Path, text: str) -> JournalSettings:
    path = tmp_path / "pbs-activated.toml"
    path.write_text("[journal]\n" + text)
    return load(str(path)).journal


def test_by_default_dovecots_unit_and_format_count(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, "")
    assert journal.login_units() == ("dovecot.service",)
    assert journal.login_formats() == ("dovecot",)


def test_courier_implies_all_four_of_its_units_and_its_format(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, 'servers = ["courier"]\n')
    assert journal.login_units() == COURIER_UNITS
    assert journal.login_formats() == ("courier",)
    assert LoginParser(journal.login_formats()).parse(COURIER_LOGIN) is not None


def test_cyrus_implies_its_one_unit_and_its_format(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, 'servers = ["cyrus"]\n')
    assert journal.login_units() == ("cyrus-imapd.service",)
    assert LoginParser(journal.login_formats()).parse(CYRUS_LOGIN) is not None


def test_several_servers_add_up(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, 'servers = ["dovecot", "cyrus"]\n')
    assert journal.login_units() == ("dovecot.service", "cyrus-imapd.service")
    assert journal.login_formats() == ("dovecot", "cyrus")


def test_units_set_win_over_the_servers_units(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, 'servers = ["courier"]\nunits = ["courier-pop.service"]\n')
    assert journal.login_units() == ("courier-pop.service",)


def test_formats_set_win_over_the_servers_formats(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, 'servers = ["courier"]\nformats = ["dovecot"]\n')
    assert journal.login_formats() == ("dovecot",)
    assert journal.login_units() == COURIER_UNITS


def test_a_02_file_naming_courier_units_keeps_reading_courier_lines(tmp_path: Path) -> None:
    """0.2's README told Courier sites to set units alone; its default formats had courier."""
    journal = journal_of(tmp_path, 'units = ["courier-pop.service", "courier-imap.service"]\n')
    assert "courier" in journal.login_formats()
    assert LoginParser(journal.login_formats()).parse(COURIER_LOGIN) is not None


def test_an_unknown_server_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown server 'popa3d'"):
        journal_of(tmp_path, 'servers = ["popa3d"]\n')


def test_no_servers_and_no_units_means_no_unit_at_all(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, "servers = []\n")
    assert journal.login_units() == ()


def test_every_known_server_can_be_named() -> None:
    from pbs_activated.config.table import TABLE

    assert TABLE["journal"]["servers"][2] == tuple(SERVERS)
    assert TABLE["journal"]["formats"][2] == tuple(SERVERS)
