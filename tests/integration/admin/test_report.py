"""`pbs-activated report` against real journal files whose contents are known: exact counts.

The files are written by systemd-journal-remote (tests/journalfiles.py), trusted
fields included, so the report reads what journalctl reads on a host: our
login and decision entries from our units, Postfix's reject lines, and forged
copies of ours from a shell, which must count for nothing.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from journalfiles import entry, write_journal
from support import run_cli

from pbs_activated.admin import report

DAY = time.mktime((2026, 11, 30, 0, 0, 0, 0, 0, -1))
"""Midnight, local time, of the day the entries are on."""


def login(address: str, user: str, at: float) -> dict[str, str]:
    return entry(
        f"authorized {address} for {user}",
        unit="pbs-journal.service",
        at=at,
        identifier="pbs-activated",
        PBS_EVENT="login",
        PBS_USER=user,
        PBS_CLIENT_ADDRESS=address,
    )


def decision(
    address: str, user: str, action: str, at: float, state: str = "RCPT", unit: str = ""
) -> dict[str, str]:
    return entry(
        f"{action} for {address}",
        unit=unit or "pbs-policy@3-192.0.2.1:25-192.0.2.99:4242.service",
        at=at,
        identifier="pbs-activated",
        PBS_ACTION=action,
        PBS_USER=user,
        PBS_CLIENT_ADDRESS=address,
        PBS_PROTOCOL_STATE=state,
    )


def refused(address: str, at: float) -> dict[str, str]:
    return entry(
        f"NOQUEUE: reject: RCPT from unknown[{address}]: 554 5.7.1 <someone@remote.test>:"
        " Relay access denied; from=<a@example.test> to=<someone@remote.test> proto=SMTP"
        " helo=<client>",
        unit="postfix@-.service",
        at=at,
        identifier="postfix/smtpd",
    )


def journal_of_a_day(directory: Path) -> None:
    nine, ten, eleven = DAY + 9 * 3600, DAY + 10 * 3600, DAY + 11 * 3600
    records = [
        login("192.0.2.10", "alice", nine + 1),
        decision("192.0.2.10", "alice", "OK", nine + 2),
        decision("192.0.2.10", "alice", "OK", nine + 3),
        decision("192.0.2.10", "alice", "DUNNO", nine + 4, state="DATA"),
        login("2001:db8::10", "alice", nine + 5),
        decision("2001:db8::10", "alice", "OK", nine + 6, unit="pbs-policy-server.service"),
        login("192.0.2.20", "bob", ten + 1),
        decision("192.0.2.20", "bob", "OK", ten + 2),
        decision("192.0.2.30", "", "DUNNO", ten + 3),
        refused("192.0.2.30", ten + 4),
        refused("::ffff:192.0.2.30", ten + 5),
        decision("192.0.2.40", "", "DEFER_IF_REJECT", eleven + 1),
        # Forged: our identifier, from a shell's scope; counts for nothing.
        entry(
            "authorized 192.0.2.66 for mallory",
            unit="session-3.scope",
            at=ten + 6,
            identifier="pbs-activated",
            PBS_EVENT="login",
            PBS_USER="mallory",
            PBS_CLIENT_ADDRESS="192.0.2.66",
        ),
        decision("192.0.2.66", "mallory", "OK", ten + 7, unit="session-3.scope"),
        # Another day: outside the period.
        login("192.0.2.10", "alice", DAY + 86400 + 60),
        # Other programs' lines are not read at all.
        entry("pop3-login: Login: user=<alice>", at=nine),
    ]
    write_journal(directory / "system.journal", records)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    directory = tmp_path / "journal"
    journal_of_a_day(directory)
    return directory


def period() -> tuple[str, str]:
    day = time.strftime("%Y-%m-%d", time.localtime(DAY))
    return f"{day} 00:00:00", f"{day} 23:59:59"


def test_every_count_per_user_and_address(journal: Path) -> None:
    since, until = period()
    counted = report.collect(since, until, str(journal)).as_dict()
    assert counted["users"] == {
        "alice": {"logins": 2, "relays": 3, "refused": 0, "unavailable": 0},
        "bob": {"logins": 1, "relays": 1, "refused": 0, "unavailable": 0},
    }
    assert counted["addresses"] == {
        "192.0.2.10": {"logins": 1, "relays": 2, "refused": 0, "unavailable": 0},
        "192.0.2.20": {"logins": 1, "relays": 1, "refused": 0, "unavailable": 0},
        "192.0.2.30": {"logins": 0, "relays": 0, "refused": 2, "unavailable": 0},
        "192.0.2.40": {"logins": 0, "relays": 0, "refused": 0, "unavailable": 1},
        "2001:db8::10": {"logins": 1, "relays": 1, "refused": 0, "unavailable": 0},
    }


def test_the_busiest_hours(journal: Path) -> None:
    since, until = period()
    hours = report.collect(since, until, str(journal)).as_dict()["busiest_hours"]
    day = time.strftime("%Y-%m-%d", time.localtime(DAY))
    assert hours == [
        {"hour": f"{day} 09:00", "events": 5},
        {"hour": f"{day} 10:00", "events": 4},
        {"hour": f"{day} 11:00", "events": 1},
    ]


def test_the_command_prints_json_and_a_table(journal: Path, tmp_path: Path) -> None:
    since, until = period()
    arguments = ("report", "--since", since, "--until", until, "--directory", str(journal))
    counted = json.loads(run_cli(*arguments, "--json").stdout)
    assert counted["users"]["alice"]["relays"] == 3
    table = run_cli(*arguments).stdout.splitlines()
    assert table[0].split() == ["user", "logins", "relays", "refused", "unavail"]
    assert table[1].split() == ["alice", "2", "3", "0", "0"]
    assert "mallory" not in "\n".join(table)


def test_a_binary_field_is_read_whole() -> None:
    data = b"MESSAGE\n" + (4).to_bytes(8, "little") + b"a\n\nb\nPBS_USER=x\n\nPBS_USER=y\n\n"
    assert list(report.parse_export(io.BytesIO(data))) == [
        {"MESSAGE": "a\n\nb", "PBS_USER": "x"},
        {"PBS_USER": "y"},
    ]
