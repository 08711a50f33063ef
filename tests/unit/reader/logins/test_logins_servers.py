"""Courier's and Cyrus's login lines, as the real daemons wrote them on Debian 12 and 13.

The recordings are tests/system/capture_servers.py's: one file per server and
release, tests/system/fixtures/<release>/<server>-login-lines.txt. Each
scenario's title says what the client did: "(failure)" means no login may come
of it, otherwise the first "from ADDRESS" is the one address it must authorize.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import REPO

from pbs_activated import addresses
from pbs_activated.reader.logins.parser import (
    SERVERS,
    Login,
    LoginParser,
    parse_courier,
    parse_cyrus,
)

FIXTURE_DIR = REPO / "tests" / "system" / "fixtures"
SERVER_NAMES = ("courier", "cyrus")
RELEASES = ("bookworm", "trixie")
INJECTED = ("192.0.2.50", "2001:db8::50")
"""The addresses the injected user names and hostile host names claim; no client has them."""

Entry = dict[str, str]


def recording(server: str, release: str) -> Path:
    return FIXTURE_DIR / release / f"{server}-login-lines.txt"


def scenarios(path: Path) -> list[tuple[str, list[Entry]]]:
    """(scenario title, journal entries) of one recording."""
    found: list[tuple[str, list[Entry]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# --- scenario:"):
            found.append((line.removeprefix("# --- scenario:").strip(), []))
        elif line.startswith("{") and found:
            found[-1][1].append(json.loads(line))
    return found


def recorded(failures: bool) -> list[tuple[str, str, list[Entry]]]:
    """(server, "release: title", entries) of every recording's failures or logins."""
    return [
        (server, f"{release}: {title}", entries)
        for server in SERVER_NAMES
        for release in RELEASES
        for title, entries in scenarios(recording(server, release))
        if ("(failure)" in title) == failures
    ]


LOGINS = recorded(failures=False)
FAILURES = recorded(failures=True)


def ids(cases: list[tuple[str, str, list[Entry]]]) -> list[str]:
    return [f"{server}/{title}" for server, title, _ in cases]


def title_address(title: str) -> str:
    match = re.search(r"from (\S+)", title)
    assert match is not None, title
    return match.group(1).rstrip(",")


def logins_in(server: str, entries: list[Entry]) -> list[Login]:
    """The logins the server's parser finds in the entries of the server's own units."""
    mail_server = SERVERS[server]
    return [
        login
        for entry in entries
        if entry.get("_SYSTEMD_UNIT") in mail_server.units
        for login in [mail_server.parse(entry["MESSAGE"])]
        if login is not None
    ]


@pytest.mark.parametrize(("server", "release"), [(s, r) for s in SERVER_NAMES for r in RELEASES])
def test_each_server_is_recorded_on_each_release(server: str, release: str) -> None:
    path = recording(server, release)
    assert f"on Debian {'12' if release == 'bookworm' else '13'}." in path.read_text()
    assert len(scenarios(path)) >= 28


@pytest.mark.parametrize(("server", "title", "entries"), LOGINS, ids=ids(LOGINS))
def test_a_recorded_login_authorizes_its_client_address_once(
    server: str, title: str, entries: list[Entry]
) -> None:
    [login] = logins_in(server, entries)
    assert addresses.normalize(login.address) == addresses.normalize(title_address(title))


@pytest.mark.parametrize(("server", "title", "entries"), LOGINS, ids=ids(LOGINS))
def test_a_recorded_login_names_its_user(server: str, title: str, entries: list[Entry]) -> None:
    [login] = logins_in(server, entries)
    named = re.search(r"<(.+)> \(a userdb user\)", title)
    expected = named.group(1) if named else re.search(r"login (\w+)/", title).group(1)  # type: ignore[union-attr]
    assert login.user == expected


@pytest.mark.parametrize(("server", "title", "entries"), FAILURES, ids=ids(FAILURES))
def test_a_recorded_failure_abort_or_disconnect_authorizes_nothing(
    server: str, title: str, entries: list[Entry]
) -> None:
    assert logins_in(server, entries) == []


@pytest.mark.parametrize(
    ("server", "title", "entries"), LOGINS + FAILURES, ids=ids(LOGINS + FAILURES)
)
def test_no_recorded_line_authorizes_an_injected_address(
    server: str, title: str, entries: list[Entry]
) -> None:
    parser = LoginParser(tuple(SERVERS))  # every format, on every line
    for entry in entries:
        login = parser.parse(entry["MESSAGE"])
        assert login is None or addresses.normalize(login.address) not in INJECTED


@pytest.mark.parametrize(
    ("server", "title", "entries"), LOGINS + FAILURES, ids=ids(LOGINS + FAILURES)
)
def test_only_the_servers_own_units_write_its_logins(
    server: str, title: str, entries: list[Entry]
) -> None:
    for entry in entries:
        if SERVERS[server].parse(entry["MESSAGE"]) is not None:
            assert entry["_SYSTEMD_UNIT"] in SERVERS[server].units
            assert entry["_TRANSPORT"] == "syslog"


@pytest.mark.parametrize(("server", "title", "entries"), LOGINS, ids=ids(LOGINS))
def test_a_recorded_courier_login_names_its_protocol(
    server: str, title: str, entries: list[Entry]
) -> None:
    [login] = logins_in(server, entries)
    if server == "cyrus":  # the same line for both: see logins.cyrus
        assert login.protocol == ""
    else:
        scenario = title.split(": ", 1)[1]  # after the release
        assert login.protocol == ("imap" if scenario.startswith("IMAP") else "pop3")


def test_courier_tls_daemons_log_from_units_of_their_own() -> None:
    units = {
        entry["_SYSTEMD_UNIT"]
        for release in RELEASES
        for title, entries in scenarios(recording("courier", release))
        if title.startswith(("POP3S", "IMAPS"))
        for entry in entries
        if parse_courier(entry["MESSAGE"])
    }
    assert units == {"courier-pop-ssl.service", "courier-imap-ssl.service"}


def test_courier_writes_ipv4_clients_mapped_and_ipv6_ones_bare() -> None:
    messages = [
        entry["MESSAGE"]
        for release in RELEASES
        for _, entries in scenarios(recording("courier", release))
        for entry in entries
    ]
    assert any("ip=[::ffff:192.0.2.10]" in message for message in messages)
    assert any("ip=[2001:db8::10]" in message for message in messages)


# --------------------------------------------------------------------------
# What doctor uses: the lines a server writes only after a successful login
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "title", "entries"), LOGINS, ids=ids(LOGINS))
def test_a_recorded_login_is_followed_by_a_session_end_line(
    server: str, title: str, entries: list[Entry]
) -> None:
    [login] = logins_in(server, entries)
    ends = [m for e in entries if (m := SERVERS[server].session_end.search(e["MESSAGE"]))]
    assert ends, "doctor would not see this login's session"
    assert {end["user"] for end in ends} == {login.user}


@pytest.mark.parametrize(("server", "title", "entries"), FAILURES, ids=ids(FAILURES))
def test_a_session_without_a_login_writes_no_session_end_line(
    server: str, title: str, entries: list[Entry]
) -> None:
    assert [e for e in entries if SERVERS[server].session_end.search(e["MESSAGE"])] == []


# --------------------------------------------------------------------------
# Lines no recording has: what a client's DNS or name could still make of them
# --------------------------------------------------------------------------

CYRUS_HOSTILE = [
    # A reverse-DNS name carrying a whole login line (a resolver that passes spaces).
    "login: x [192.0.2.50] alice plaintext User logged in SESSIONID=<a> [192.0.2.40] alice "
    "plaintext User logged in SESSIONID=<cyrus-1-2-3>",
    "login: User logged in [192.0.2.50] [192.0.2.40] alice plaintext User logged in",
    "login: ]] [[192.0.2.50] [192.0.2.40] alice plaintext+TLS User logged in SESSIONID=<x>",
]


@pytest.mark.parametrize("message", CYRUS_HOSTILE)
def test_a_hostile_cyrus_host_name_cannot_replace_the_address(message: str) -> None:
    login = parse_cyrus(message)
    assert login is not None and login.address == "192.0.2.40" and login.user == "alice"


@pytest.mark.parametrize(
    "message",
    [
        "badlogin: [192.0.2.40] plaintext (alice) [SASL(-13): authentication failure]",
        "login: [192.0.2.40] alice plaintext User logged in SESSIONID=<a> trailing",
        "login: [192.0.2.40] alice plaintext User logged out",
        "x login: [192.0.2.40] alice plaintext User logged in",
        "login: 192.0.2.40 alice plaintext User logged in",
    ],
)
def test_cyrus_lines_other_than_a_login_are_not_logins(message: str) -> None:
    assert parse_cyrus(message) is None


@pytest.mark.parametrize(
    "message",
    [
        "LOGIN FAILED, user=alice, ip=[::ffff:192.0.2.12], port=[36267]",
        "LOGOUT, user=alice, ip=[::ffff:192.0.2.10], port=[46927], top=0, retr=0",
        "LOGIN, user=alice, ip=[::ffff:192.0.2.10]",  # every real line has the port
        "LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[1], protocol=IMAP, junk",
        " LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[1]",
    ],
)
def test_courier_lines_other_than_a_login_are_not_logins(message: str) -> None:
    assert parse_courier(message) is None


def test_a_courier_name_ending_in_a_tls_flag_cannot_replace_the_address() -> None:
    message = (
        "LOGIN, user=a, ip=[192.0.2.50], port=[995], stls=1, ip=[::ffff:192.0.2.30], "
        "port=[40000], stls=1"
    )
    assert parse_courier(message) == Login(
        "a, ip=[192.0.2.50], port=[995], stls=1", "::ffff:192.0.2.30", "pop3"
    )


def test_every_server_names_its_units_and_a_session_end_pattern() -> None:
    assert set(SERVERS) == {"dovecot", "courier", "cyrus"}
    for server in SERVERS.values():
        assert server.units and all(unit.endswith(".service") for unit in server.units)
        assert server.session_end.pattern
