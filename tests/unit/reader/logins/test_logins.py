"""The login-line parsers: what counts as a successful login, and what never does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import REPO

from pbs_activated.reader.logins.parser import (
    InvalidPattern,
    Login,
    LoginParser,
    compile_site_pattern,
    parse_courier,
    parse_dovecot,
    parse_site,
)

FIXTURE_DIR = REPO / "tests" / "system" / "fixtures"
FIXTURES = FIXTURE_DIR / "dovecot-login-lines.txt"
"""The first recording (Debian 12, six scenarios), which tests/integration reads too."""
RECORDINGS = sorted(FIXTURE_DIR.glob("*/dovecot-login-lines.txt"))
"""One per release, by tests/system/capture_fixtures.py: fixtures/<release>/."""
INJECTED = "192.0.2.50"
"""The address the recorded injected user names claim (capture_fixtures.INJECTED)."""

# Dovecot 2.3 (Debian 12) and 2.4: the default login_log_format_elements, with and
# without TLS, `secured`, `%k`, a file log's `Info: ` prefix, and older lines
# without mpid/session.
DOVECOT_SUCCESSES = [
    (
        "pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, "
        "mpid=1234, session=<abcd>",
        Login("alice", "192.0.2.10", "pop3"),
    ),
    (
        "imap-login: Login: user=<alice>, method=PLAIN, rip=2001:db8::10, lip=2001:db8::1, "
        "mpid=1235, session=<01mxDgxhM5MgAQ24AAAAAAAAAAAAAAAQ>",
        Login("alice", "2001:db8::10", "imap"),
    ),
    (
        "imap-login: Login: user=<bob@example.org>, method=PLAIN, rip=198.51.100.7, "
        "lip=192.0.2.1, mpid=17304, TLS, session=<fI331X4hMwB/AAAB>",
        Login("bob@example.org", "198.51.100.7", "imap"),
    ),
    (
        "imap-login: Login: user=<bob>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, "
        "mpid=126803, secured, session=<GIYZ4Z+GaCt/AAAB>",
        Login("bob", "198.51.100.7", "imap"),
    ),
    (
        "pop3-login: Login: user=<carol>, method=SCRAM-SHA-256, rip=::ffff:203.0.113.9, "
        "lip=::ffff:192.0.2.1, mpid=99, TLS, TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 "
        "(256/256 bits), session=<x+y/z>",
        Login("carol", "::ffff:203.0.113.9", "pop3"),
    ),
    (
        "pop3-login: Info: Login: user=<dave>, method=PLAIN, rip=192.0.2.44, lip=192.0.2.1, "
        "mpid=7, session=<q>",
        Login("dave", "192.0.2.44", "pop3"),
    ),
    (
        "imap-login: Login: user=<erin>, method=LOGIN, rip=192.0.2.45, lip=192.0.2.1, TLS",
        Login("erin", "192.0.2.45", "imap"),
    ),
    (
        "imap-login: Login: user=<frank>, method=PLAIN, rip=192.0.2.46, lip=192.0.2.1",
        Login("frank", "192.0.2.46", "imap"),
    ),
    # Dovecot 2.4 (Debian 13) says "Logged in:"; the elements are as in 2.3.
    (
        "pop3-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, "
        "mpid=489, session=<Y0xP6o9hde3AAAIK>",
        Login("alice", "192.0.2.10", "pop3"),
    ),
    (
        "imap-login: Logged in: user=<alice>, method=PLAIN, rip=2001:db8::14, lip=2001:db8::1, "
        "mpid=686, TLS, session=<7qgr649hc5kgAQ24AAAAAAAAAAAAAAAU>",
        Login("alice", "2001:db8::14", "imap"),
    ),
    (
        "pop3-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.19, lip=192.0.2.1, "
        "mpid=743, secured, session=<N4xX649hc7XAAAIT>",
        Login("alice", "192.0.2.19", "pop3"),
    ),
    (
        "imap-login: Info: Logged in: user=<bob>, method=PLAIN, rip=192.0.2.15, "
        "lip=192.0.2.1, mpid=666, TLS, session=<rEUV649hiavAAAIP>",
        Login("bob", "192.0.2.15", "imap"),
    ),
]

DOVECOT_FAILURES = [
    "pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN, "
    "rip=192.0.2.12, lip=192.0.2.1, session=<8fZRDgxhJbDAAAIM>",
    "imap-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>, "
    "method=PLAIN, rip=192.0.2.12, lip=192.0.2.1, TLS, session=<AVFjDgxhQ8zAAAIM>",
    "pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 0 secs): "
    "user=<alice>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1, session=<8fZRDgxhJbDAAAIM>",
    "imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=192.0.2.13, "
    "lip=192.0.2.1, TLS handshaking: SSL_accept() failed, session=<x>",
    "imap-login: Login with referral: user=<alice>, method=PLAIN, rip=192.0.2.14, lip=192.0.2.1",
    "imap-login: proxy(alice): started proxying to 10.0.0.2:143: user=<alice>, method=PLAIN, "
    "rip=192.0.2.15, lip=192.0.2.1",
    "pop3(alice)<495><OCo+DgxhTcnAAAIK>: Disconnected: Logged out top=0/0, retr=0/0, del=0/0",
    "pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot "
    "ruser=alice rhost=192.0.2.12  user=alice",
    "submission-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.16, lip=192.0.2.1",
    "imap-login: Login: user=<>, method=PLAIN, rip=192.0.2.17, lip=192.0.2.1",
    "",
    # Dovecot 2.4's wordings: "Login aborted: <why> (<what>) (<reason code>): ..."
    "pop3-login: Login aborted: Connection closed (auth failed, 1 attempts in 0 secs) "
    "(auth_failed): user=<alice>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1, "
    "session=<9ntk6o9hl9PAAAIM>",
    "imap-login: Login aborted: Logged out (no auth attempts in 0 secs) (no_auth_attempts): "
    "user=<>, rip=192.0.2.23, lip=192.0.2.1, session=<g0C76o9hb9PAAAIX>",
    "imap-login: Authenticate PLAIN failed: Aborted: user=<>, method=PLAIN, rip=192.0.2.25, "
    "lip=192.0.2.1, session=<I03N6o9h7cvAAAIZ>",
    "imap-login: Login aborted: Connection closed: SSL_accept() failed: error:0A0000F4:SSL "
    "routines::unexpected message (disconnected during TLS handshake) "
    "(tls_handshake_not_finished): user=<>, rip=192.0.2.18, lip=192.0.2.1, TLS handshaking: "
    "SSL_accept() failed: error:0A0000F4:SSL routines::unexpected message, session=<x>",
    "pop3-login: Logged in, but you should use this server instead.: user=<alice>, "
    "method=PLAIN, rip=192.0.2.14, lip=192.0.2.1",
    "submission-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.16, lip=192.0.2.1",
]


def fixture_scenarios(path: Path = FIXTURES) -> list[tuple[str, list[str]]]:
    """(scenario comment, messages) from the real lines recorded in a booted Debian."""
    scenarios: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# --- scenario:"):
            scenarios.append((line.removeprefix("# --- scenario:").strip(), []))
        elif line.startswith("{") and scenarios:
            scenarios[-1][1].append(json.loads(line)["MESSAGE"])
    return scenarios


def recorded_version(path: Path) -> str:
    """The Dovecot major version a recording's header names (`2.3`, `2.4`)."""
    match = re.search(r"Dovecot (\d+\.\d+)", path.read_text().split("\n", 2)[0])
    assert match is not None, f"{path}: the first line names no Dovecot version"
    return match.group(1)


def recorded_scenarios(failures: bool) -> list[tuple[str, list[str]]]:
    """Every (scenario, messages) of every release's recording: the failures or the logins."""
    return [
        (f"{path.parent.name}: {scenario}", messages)
        for path in RECORDINGS
        for scenario, messages in fixture_scenarios(path)
        if ("(failure)" in scenario) == failures
    ]


def scenario_ids(scenarios: list[tuple[str, list[str]]]) -> list[str]:
    return [scenario for scenario, _ in scenarios]


def scenario_address(scenario: str) -> str:
    """The client address of a successful scenario: its title's first `from ADDRESS`."""
    address = re.search(r"from (\S+)", scenario)
    assert address is not None, scenario
    return address.group(1).rstrip(",")


RECORDED_LOGINS = recorded_scenarios(failures=False)
RECORDED_FAILURES = recorded_scenarios(failures=True)


@pytest.mark.parametrize(("message", "expected"), DOVECOT_SUCCESSES)
def test_dovecot_successful_login_is_parsed(message: str, expected: Login) -> None:
    assert parse_dovecot(message) == expected


@pytest.mark.parametrize("message", DOVECOT_FAILURES)
def test_dovecot_failed_aborted_or_other_lines_are_not_logins(message: str) -> None:
    assert parse_dovecot(message) is None


@pytest.mark.parametrize(
    "path", [FIXTURES, *RECORDINGS], ids=lambda path: str(path.relative_to(FIXTURE_DIR))
)
def test_real_debian_dovecot_lines_give_exactly_the_successful_logins(path: Path) -> None:
    scenarios = fixture_scenarios(path)
    assert scenarios
    for scenario, messages in scenarios:
        logins = [login for message in messages if (login := parse_dovecot(message))]
        if "(failure)" in scenario:
            assert logins == [], scenario
        else:
            address = re.search(r"from (\S+)", scenario)
            assert address is not None
            assert [login.address for login in logins] == [address.group(1)], scenario


def test_both_dovecot_versions_are_recorded() -> None:
    """Debian 12's 2.3 and Debian 13's 2.4: a missing recording must fail, not skip."""
    assert sorted(recorded_version(path) for path in RECORDINGS) == ["2.3", "2.4"]


@pytest.mark.parametrize(
    ("scenario", "messages"), RECORDED_LOGINS, ids=scenario_ids(RECORDED_LOGINS)
)
def test_recorded_login_gives_one_login_from_its_client_address(
    scenario: str, messages: list[str]
) -> None:
    logins = [login for message in messages if (login := parse_dovecot(message))]
    assert [login.address for login in logins] == [scenario_address(scenario)]


@pytest.mark.parametrize(
    ("scenario", "messages"), RECORDED_LOGINS, ids=scenario_ids(RECORDED_LOGINS)
)
def test_recorded_login_names_its_protocol(scenario: str, messages: list[str]) -> None:
    protocol = "imap" if " IMAP" in f" {scenario}" else "pop3"
    logins = [login for message in messages if (login := parse_dovecot(message))]
    assert [login.protocol for login in logins] == [protocol]


@pytest.mark.parametrize(
    ("scenario", "messages"), RECORDED_FAILURES, ids=scenario_ids(RECORDED_FAILURES)
)
def test_recorded_failure_abort_or_disconnect_is_not_a_login(
    scenario: str, messages: list[str]
) -> None:
    assert messages, "the scenario logged nothing: it proves nothing"
    assert [message for message in messages if parse_dovecot(message)] == []


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.parent.name)
def test_no_recorded_line_yields_the_injected_address(path: Path) -> None:
    """The injected names put `rip=192.0.2.50` in refused and accepted logins alike."""
    messages = [message for _, lines in fixture_scenarios(path) for message in lines]
    assert any(f"rip={INJECTED}" in message for message in messages)
    parsed = [login for message in messages if (login := parse_dovecot(message))]
    assert INJECTED not in [login.address for login in parsed]


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.parent.name)
def test_recorded_injected_name_login_keeps_the_whole_name_as_the_user(path: Path) -> None:
    injected = [
        (scenario, messages)
        for scenario, messages in fixture_scenarios(path)
        if "injected-name success" in scenario
    ]
    assert len(injected) == 2
    for scenario, messages in injected:
        [login] = [login for message in messages if (login := parse_dovecot(message))]
        assert f"rip={INJECTED}" in login.user
        assert f"<{login.user}>" in scenario
        assert login.address == scenario_address(scenario)


@pytest.mark.parametrize("element", ["TLS", "secured"])
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.parent.name)
def test_recorded_tls_and_trusted_logins_are_parsed(path: Path, element: str) -> None:
    """STARTTLS, implicit TLS and login_trusted_networks add an element before session=."""
    scenarios = [
        (scenario, messages)
        for scenario, messages in fixture_scenarios(path)
        if f"{element} success)" in scenario
    ]
    assert len(scenarios) == {"TLS": 4, "secured": 2}[element]
    for scenario, messages in scenarios:
        [line] = [message for message in messages if parse_dovecot(message)]
        assert f", {element}, session=<" in line, scenario


def test_injected_user_name_cannot_smuggle_an_address() -> None:
    injected = "x>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.1, mpid=1, session=<y"
    message = (
        f"imap-login: Login: user=<{injected}>, method=PLAIN, rip=203.0.113.5, "
        f"lip=192.0.2.1, mpid=9, TLS, session=<abc>"
    )
    assert parse_dovecot(message) == Login(injected, "203.0.113.5", "imap")


def test_user_name_with_rip_suffix_cannot_replace_the_real_address() -> None:
    message = (
        "pop3-login: Login: user=<alice, rip=192.0.2.50>, method=PLAIN, "
        "rip=203.0.113.5, lip=192.0.2.1, mpid=9, session=<abc>"
    )
    login = parse_dovecot(message)
    assert login is not None and login.address == "203.0.113.5"


def test_text_after_the_last_element_is_not_a_login() -> None:
    message = (
        "pop3-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, "
        "lip=192.0.2.1, mpid=9, session=<abc>, rip=192.0.2.50"
    )
    assert parse_dovecot(message) is None


def test_text_before_the_service_is_not_a_login() -> None:
    message = (
        "hello pop3-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, " "lip=192.0.2.1"
    )
    assert parse_dovecot(message) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "LOGIN, user=alice, ip=[::ffff:192.0.2.7], port=[40211]",
            Login("alice", "::ffff:192.0.2.7", "pop3"),
        ),
        (
            "LOGIN, user=bob@example.org, ip=[2001:db8::7], port=[51234], protocol=IMAP",
            Login("bob@example.org", "2001:db8::7", "imap"),
        ),
        # Courier 5.2 (Debian 13) over TLS: courier-login-lines.txt, trixie.
        (
            "LOGIN, user=alice, ip=[::ffff:192.0.2.14], port=[54321], stls=1",
            Login("alice", "::ffff:192.0.2.14", "pop3"),
        ),
        (
            "LOGIN, user=bob, ip=[::ffff:192.0.2.15], port=[43323], protocol=IMAP, starttls=1",
            Login("bob", "::ffff:192.0.2.15", "imap"),
        ),
    ],
)
def test_courier_successful_login_is_parsed(message: str, expected: Login) -> None:
    assert parse_courier(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "LOGIN FAILED, user=alice, ip=[::ffff:192.0.2.7]",
        "LOGOUT, user=alice, ip=[::ffff:192.0.2.7], headers=0, body=0, rcvd=12, sent=300",
        "Connection, ip=[::ffff:192.0.2.7]",
        "LOGIN, user=alice, ip=[::ffff:192.0.2.7], port=[40211], extra",
        # Courier writes no `protocol=POP3` (only IMAP names itself): not a line it writes.
        "LOGIN, user=carol, ip=[::ffff:192.0.2.8], port=[110], protocol=POP3",
    ],
)
def test_courier_failures_and_other_lines_are_not_logins(message: str) -> None:
    assert parse_courier(message) is None


def test_courier_injected_user_name_cannot_smuggle_an_address() -> None:
    injected = "x, ip=[192.0.2.50], port=[1]"
    message = f"LOGIN, user={injected}, ip=[::ffff:203.0.113.5], port=[40211]"
    assert parse_courier(message) == Login(injected, "::ffff:203.0.113.5", "pop3")


def test_site_pattern_must_name_user_and_address() -> None:
    with pytest.raises(InvalidPattern, match="address"):
        compile_site_pattern(r"login ok for (?P<user>\S+)")


def test_site_pattern_must_be_a_regular_expression() -> None:
    with pytest.raises(InvalidPattern, match="not a regular expression"):
        compile_site_pattern(r"login (?P<user>")


def test_site_pattern_matches_the_whole_message_only() -> None:
    pattern = compile_site_pattern(r"auth ok user=(?P<user>\S+) from (?P<address>\S+)")
    assert parse_site(pattern, "auth ok user=alice from 192.0.2.9") == Login(
        "alice", "192.0.2.9", ""
    )
    assert parse_site(pattern, "auth ok user=alice from 192.0.2.9 (not really)") is None
    assert parse_site(pattern, "x auth ok user=alice from 192.0.2.9") is None


def test_parser_tries_the_configured_formats_only() -> None:
    parser = LoginParser(("courier",))
    assert parser.parse(DOVECOT_SUCCESSES[0][0]) is None
    assert parser.parse("LOGIN, user=alice, ip=[::ffff:192.0.2.7], port=[1]") is not None


def test_imap_logins_are_ignored_when_imap_is_off() -> None:
    parser = LoginParser(("dovecot", "courier"), imap=False)
    assert parser.parse(DOVECOT_SUCCESSES[1][0]) is None
    assert parser.parse(DOVECOT_SUCCESSES[0][0]) == DOVECOT_SUCCESSES[0][1]
    assert parser.parse("LOGIN, user=b, ip=[2001:db8::7], port=[1], protocol=IMAP") is None


def test_site_pattern_is_tried_after_the_formats() -> None:
    parser = LoginParser(("dovecot",), pattern=r"webmail: (?P<user>\w+) at (?P<address>[\d.]+)")
    assert parser.parse("webmail: alice at 192.0.2.77") == Login("alice", "192.0.2.77", "")
    assert parser.parse(DOVECOT_SUCCESSES[0][0]) == DOVECOT_SUCCESSES[0][1]
