"""doctor's per-session evidence, on the real lines of Dovecot 2.3/2.4, Courier and Cyrus.

The recordings are tests/system/fixtures/<release>/<server>-login-lines.txt. A
changed login format is played on them as the reader would meet it: from one
entry on, no parser takes a login line any more, while the session ends go on
as before; the users who logged in before the change (alice in every
recording) must not hide the sessions after it.
"""

from __future__ import annotations

import json
import re

import pytest
from support import REPO

from pbs_activated.admin.doctor import logs
from pbs_activated.admin.doctor.findings import ERROR, OK, WARNING
from pbs_activated.admin.doctor.sessions import Sessions, logged_at
from pbs_activated.config import Config
from pbs_activated.reader.logins.dovecot import session_started
from pbs_activated.reader.logins.parser import SERVERS, Login

FIXTURE_DIR = REPO / "tests" / "system" / "fixtures"
RECORDINGS = [
    (server, release)
    for server in ("dovecot", "courier", "cyrus")
    for release in ("bookworm", "trixie")
]
NO_SESSION = re.compile(r", session=<[^<>]*>$")

Entry = dict[str, str]


def entries_of(server: str, release: str) -> list[Entry]:
    """The recording's journal entries of the server's own units, in order."""
    path = FIXTURE_DIR / release / f"{server}-login-lines.txt"
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["_SYSTEMD_UNIT"] in SERVERS[server].units]


def read(
    server: str, entries: list[Entry], changed_at: int | None = None, since: float = 0.0
) -> Sessions:
    """Feed the entries through Sessions as doctor does; from `changed_at` on, no login is taken."""
    sessions = Sessions([SERVERS[server]], since)
    for index, entry in enumerate(entries):
        login = SERVERS[server].parse(entry["MESSAGE"])
        if login is not None and (changed_at is None or index < changed_at):
            sessions.taken(entry, login)
        else:
            sessions.other(entry)
    return sessions


def ends(server: str, entries: list[Entry]) -> list[int]:
    """The indexes of the entries that end a logged-in session."""
    pattern = SERVERS[server].session_end
    return [i for i, entry in enumerate(entries) if pattern.search(entry["MESSAGE"])]


def alices_second_session(server: str, entries: list[Entry]) -> int:
    """The index of the login line of alice's second session: the format changes there."""
    parse = SERVERS[server].parse
    alices = [i for i, entry in enumerate(entries) if is_alice(parse(entry["MESSAGE"]))]
    return alices[1]


def is_alice(login: Login | None) -> bool:
    return login is not None and login.user == "alice"


@pytest.mark.parametrize(("server", "release"), RECORDINGS)
def test_every_recorded_session_end_has_its_own_login(server: str, release: str) -> None:
    entries = entries_of(server, release)
    assert ends(server, entries)
    assert read(server, entries).missed == []


@pytest.mark.parametrize(("server", "release"), RECORDINGS)
def test_sessions_after_a_format_change_are_missed_though_alice_logged_in_before(
    server: str, release: str
) -> None:
    entries = entries_of(server, release)
    change = alices_second_session(server, entries)
    sessions = read(server, entries, changed_at=change)
    after = [entries[i]["MESSAGE"] for i in ends(server, entries) if i > change]
    assert [ended.message for ended in sessions.missed] == after
    assert "alice" in {ended.user for ended in sessions.missed}
    assert sessions.last_taken < sessions.missed[0].at


@pytest.mark.parametrize(("server", "release"), RECORDINGS)
def test_a_format_change_is_an_error_and_older_misses_a_warning(server: str, release: str) -> None:
    entries = entries_of(server, release)
    change = alices_second_session(server, entries)
    finding = logs.format_finding("x.service", read(server, entries, change), {}, "24 h")
    assert finding.status == ERROR and "alice" in finding.message
    # The same sessions missed, then a login taken after them: no longer "since then".
    sessions = read(server, entries, change)
    sessions.last_taken = sessions.missed[-1].at + 1
    assert logs.format_finding("x.service", sessions, {}, "24 h").status == WARNING
    assert logs.format_finding("x.service", read(server, entries), {}, "24 h").status == OK


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_a_dovecot_session_name_tells_when_its_login_came(release: str) -> None:
    entries = entries_of("dovecot", release)
    for entry in entries:
        login = SERVERS["dovecot"].parse(entry["MESSAGE"])
        match = re.search(r"session=<([^<>]+)>$", entry["MESSAGE"])
        if login is not None and match:
            started = session_started({"session": match[1]}, logged_at(entry))
            assert started is not None and 0 <= logged_at(entry) - started < 1


@pytest.mark.parametrize(("server", "release"), RECORDINGS)
def test_a_session_that_began_before_the_window_is_no_evidence(server: str, release: str) -> None:
    """Its login is older than the journal read: only the end is in it."""
    entries = entries_of(server, release)
    first_end = ends(server, entries)[0]
    # The window starts just before the first session's end; Cyrus's process wrote its
    # login before that, and nothing of it is in the window.
    window = entries[first_end:]
    since = logged_at(window[0]) - 0.001
    assert read(server, window, since=since).missed == []


def without_session(entries: list[Entry]) -> list[Entry]:
    """The entries with Dovecot's `session=<...>` element left out of the login lines, as a
    login_log_format_elements without `session=<%{session}>` writes them (", "-joined)."""
    return [
        {**entry, "MESSAGE": NO_SESSION.sub("", entry["MESSAGE"])}
        if "-login: " in entry["MESSAGE"]
        else entry
        for entry in entries
    ]


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_a_dovecot_login_without_session_is_matched_by_its_mail_process(release: str) -> None:
    entries = without_session(entries_of("dovecot", release))
    assert read("dovecot", entries).missed == []
    change = alices_second_session("dovecot", entries)
    assert read("dovecot", entries, change).missed


def test_a_login_naming_neither_session_nor_process_is_matched_by_time() -> None:
    """One login of alice's explains one later session of hers, not two."""
    entries = entries_of("dovecot", "bookworm")
    end = entries[ends("dovecot", entries)[0]]
    sessions = Sessions([SERVERS["dovecot"]], 0.0)
    bare = {"MESSAGE": "pop3-login: Login: user=<alice>, rip=192.0.2.10, lip=192.0.2.1"}
    sessions.taken({**bare, "__REALTIME_TIMESTAMP": "1"}, Login("alice", "192.0.2.10", "pop3"))
    sessions.other(end)
    assert sessions.missed == []
    sessions.other(end)
    assert [ended.user for ended in sessions.missed] == ["alice"]


def test_imap_sessions_are_left_out_when_imap_logins_are() -> None:
    entries = entries_of("dovecot", "trixie")
    sessions = Sessions([SERVERS["dovecot"]], 0.0, imap=False)
    for entry in entries:
        sessions.other(entry)
    assert sessions.missed and all(e.message.startswith("pop3(") for e in sessions.missed)


def test_dovecots_session_end_names_user_protocol_process_and_session() -> None:
    message = "pop3(dora)<497><1NWu8o9h1bjAAAIK>: Disconnected: Logged out top=0/0, retr=0/0"
    match = SERVERS["dovecot"].session_end.search(message)
    assert match is not None
    assert match.group("user", "protocol", "process", "session") == (
        "dora",
        "pop3",
        "497",
        "1NWu8o9h1bjAAAIK",
    )


class Recording:
    """doctor's Host answering from a recording: the unit exists, journalctl gives `entries`."""

    def __init__(self, entries: list[Entry]) -> None:
        self.output = "\n".join(json.dumps(entry) for entry in entries)

    def run(self, command: list[str], timeout: float = 30.0) -> tuple[int, str]:
        if command[0] == "journalctl":
            return 0, self.output
        return 0, "loaded"


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_a_session_end_written_before_its_login_line_still_finds_it(release: str) -> None:
    """Dovecot's login and mail processes log through one log process, in no order between
    them: a short session's Disconnected line can reach the journal before its login line."""
    entries = entries_of("dovecot", release)
    reordered = list(entries)
    for end in ends("dovecot", entries):  # each end moved before every line of its session
        line = reordered.pop(reordered.index(entries[end]))
        reordered.insert(0, line)
    config = Config("/nonexistent")
    [finding] = list(logs.check(config, Recording(reordered), window=10 * 365 * 86400))
    assert finding.status == OK, finding
