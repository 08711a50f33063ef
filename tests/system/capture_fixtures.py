"""Regenerate tests/system/fixtures/<release>/: real Dovecot and Postfix journal entries.

Why: the product parses Dovecot login lines from the journal and must trust
only entries whose *trusted* fields (_SYSTEMD_UNIT, _UID, _COMM, _EXE, ...)
come from Dovecot.  Unit tests need exact, real entries to parse; guessing
the field values is how such filters go wrong (e.g. _COMM is "log", not
"pop3-login", because Dovecot's log process writes every line), and guessing
the wording is how the first "2.4" pattern came to match no 2.4 login at all.
So every supported release's Dovecot (bookworm: 2.3, trixie: 2.4) is booted and
made to log every kind of login there is.

Run as root on the host (both releases, or the ones named)::

    /usr/bin/python3 tests/system/capture_fixtures.py [--release bookworm] [--release trixie]

Output files per release (entries exactly as ``journalctl -o json`` / ``-o export`` print them):

* fixtures/<release>/dovecot-login-lines.txt      - "# --- scenario:" lines, then JSON lines
* fixtures/<release>/dovecot-login-lines.export   - the same entries in export format
* fixtures/<release>/postfix-smtpd-lines.txt      - relay refused / local mail accepted

A scenario's title says what the client did and how it ended: "(failure)" when
no login may come of it, otherwise the first "from ADDRESS" is the address the
one successful login line must name (tests/unit/reader/logins/test_logins.py relies on this).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).parent))

from container import TARGETS, Container, Target  # noqa: E402
from mailhost import (  # noqa: E402
    abort_login,
    configure_mail_host,
    dovecot_any_user_name,
    dovecot_tls,
    dovecot_trusting,
    dovecot_version,
    imap_login,
    pop3_login,
    postfix_unit,
    smtp_session,
)

FIXTURES = Path(__file__).with_name("fixtures")
RELEASES = ("bookworm", "trixie")
INJECTION_PASSWORD = "inject-pw"
INJECTED = "192.0.2.50"
"""The address the injected user names claim; no scenario logs in from it."""
INJECTED_NAMES = [
    f"x, rip={INJECTED}",
    f"y>, method=plain, rip={INJECTED}, lip=192.0.2.1, mpid=1, session=<a",
]
TRUSTED = ["192.0.2.19/32", "192.0.2.20/32", "2001:db8::16/128"]

Action = Callable[[Container], Any]


@dataclass(frozen=True)
class Scenario:
    """One client action, and the Dovecot set-up it needs (None: the plain mail host)."""

    title: str
    action: Action
    setup: str | None = None


def pop3(source: str, user: str, password: str, tls: str = "none") -> Action:
    return lambda ct: pop3_login(ct, source, user, password, tls)


def imap(source: str, user: str, password: str, tls: str = "none") -> Action:
    return lambda ct: imap_login(ct, source, user, password, tls)


def abort(protocol: str, source: str, how: str, user: str = "alice") -> Action:
    return lambda ct: abort_login(ct, protocol, source, how, user)


DOVECOT_SCENARIOS: list[Scenario] = [
    # The plain mail host of the system tests: plaintext, IPv4 and IPv6.
    Scenario(
        "POP3 login alice/secret from 192.0.2.10 (success)", pop3("192.0.2.10", "alice", "secret")
    ),
    Scenario(
        "IMAP login alice/secret from 192.0.2.11 (success)", imap("192.0.2.11", "alice", "secret")
    ),
    Scenario(
        "POP3 login alice with a wrong password from 192.0.2.12 (failure)",
        pop3("192.0.2.12", "alice", "wrong"),
    ),
    Scenario(
        "IMAP login of unknown user nosuch from 192.0.2.13 (failure)",
        imap("192.0.2.13", "nosuch", "wrong"),
    ),
    Scenario(
        "POP3 login alice/secret from 2001:db8::10 (IPv6 success)",
        pop3("2001:db8::10", "alice", "secret"),
    ),
    Scenario(
        "IMAP login bob/bob-secret from 2001:db8::11 (IPv6 success)",
        imap("2001:db8::11", "bob", "bob-secret"),
    ),
    Scenario(
        "IMAP login bob with a wrong password from 2001:db8::12 over IPv6 (failure)",
        imap("2001:db8::12", "bob", "wrong"),
    ),
    Scenario(
        "POP3 login of unknown user nosuch from 2001:db8::13 over IPv6 (failure)",
        pop3("2001:db8::13", "nosuch", "wrong"),
    ),
    # Leaving without a login, every way a client can.
    Scenario(
        "POP3 connection closed after the greeting, from 192.0.2.21 (failure)",
        abort("pop3", "192.0.2.21", "close"),
    ),
    Scenario(
        "IMAP connection closed after the greeting, from 2001:db8::17 (failure)",
        abort("imap", "2001:db8::17", "close"),
    ),
    Scenario(
        "POP3 QUIT without a login, from 192.0.2.22 (failure)", abort("pop3", "192.0.2.22", "quit")
    ),
    Scenario(
        "IMAP LOGOUT without a login, from 192.0.2.23 (failure)",
        abort("imap", "192.0.2.23", "quit"),
    ),
    Scenario(
        "POP3 AUTH PLAIN cancelled with *, then QUIT, from 192.0.2.24 (failure)",
        abort("pop3", "192.0.2.24", "cancel-auth"),
    ),
    Scenario(
        "IMAP AUTHENTICATE PLAIN cancelled with *, then LOGOUT, from 192.0.2.25 (failure)",
        abort("imap", "192.0.2.25", "cancel-auth"),
    ),
    Scenario(
        "POP3 wrong password for alice, then QUIT, from 192.0.2.26 (failure)",
        abort("pop3", "192.0.2.26", "fail-then-quit"),
    ),
    Scenario(
        "IMAP wrong password for alice, then LOGOUT, from 192.0.2.27 (failure)",
        abort("imap", "192.0.2.27", "fail-then-quit"),
    ),
    # User names that carry an address: Debian's auth_username_chars refuses them.
    Scenario(
        f"POP3 login as the injected name <{INJECTED_NAMES[0]}>, refused by "
        "auth_username_chars, from 192.0.2.28 (failure)",
        pop3("192.0.2.28", INJECTED_NAMES[0], INJECTION_PASSWORD),
    ),
    Scenario(
        f"IMAP login as the injected name <{INJECTED_NAMES[1]}>, refused by "
        "auth_username_chars, from 192.0.2.29 (failure)",
        imap("192.0.2.29", INJECTED_NAMES[1], INJECTION_PASSWORD),
    ),
    Scenario(
        "POP3 login alice/secret from 127.0.0.1 on loopback (success; the reader ignores it)",
        pop3("127.0.0.1", "alice", "secret"),
    ),
    # TLS: STARTTLS on the plain ports, implicit TLS on 995/993.
    Scenario(
        "POP3 STLS login alice/secret from 192.0.2.14 (TLS success)",
        pop3("192.0.2.14", "alice", "secret", "starttls"),
        "tls",
    ),
    Scenario(
        "IMAP STARTTLS login bob/bob-secret from 192.0.2.15 (TLS success)",
        imap("192.0.2.15", "bob", "bob-secret", "starttls"),
        "tls",
    ),
    Scenario(
        "POP3S (port 995) login alice/secret from 192.0.2.16 (TLS success)",
        pop3("192.0.2.16", "alice", "secret", "implicit"),
        "tls",
    ),
    Scenario(
        "IMAPS (port 993) login alice/secret from 2001:db8::14 (IPv6 TLS success)",
        imap("2001:db8::14", "alice", "secret", "implicit"),
        "tls",
    ),
    Scenario(
        "IMAP STARTTLS login alice with a wrong password from 192.0.2.17 (failure)",
        imap("192.0.2.17", "alice", "wrong", "starttls"),
        "tls",
    ),
    Scenario(
        "IMAPS connection closed during the TLS handshake, from 192.0.2.18 (failure)",
        abort("imap", "192.0.2.18", "tls-close"),
        "tls",
    ),
    Scenario(
        "POP3S connection closed during the TLS handshake, from 2001:db8::15 (failure)",
        abort("pop3", "2001:db8::15", "tls-close"),
        "tls",
    ),
    # login_trusted_networks: the login line says "secured".
    Scenario(
        "POP3 login alice/secret from 192.0.2.19 in login_trusted_networks (secured success)",
        pop3("192.0.2.19", "alice", "secret"),
        "trusted",
    ),
    Scenario(
        "IMAP login bob/bob-secret from 2001:db8::16 in login_trusted_networks "
        "(IPv6 secured success)",
        imap("2001:db8::16", "bob", "bob-secret"),
        "trusted",
    ),
    Scenario(
        "IMAP login alice with a wrong password from 192.0.2.20 in login_trusted_networks "
        "(failure)",
        imap("192.0.2.20", "alice", "wrong"),
        "trusted",
    ),
    # A Dovecot that allows any user name: the login succeeds and the name is in the line.
    Scenario(
        f"POP3 login as <{INJECTED_NAMES[0]}> (a Dovecot allowing any name) from 192.0.2.30 "
        "(injected-name success)",
        pop3("192.0.2.30", INJECTED_NAMES[0], INJECTION_PASSWORD),
        "any-name",
    ),
    Scenario(
        f"IMAP login as <{INJECTED_NAMES[1]}> (a Dovecot allowing any name) from 2001:db8::18 "
        "(IPv6 injected-name success)",
        imap("2001:db8::18", INJECTED_NAMES[1], INJECTION_PASSWORD),
        "any-name",
    ),
]

POSTFIX_SCENARIOS: list[Scenario] = [
    Scenario(
        "SMTP from 192.0.2.11: RCPT someone@remote.test refused (relay), "
        "alice@example.test accepted, DATA sent",
        lambda ct: smtp_session(
            ct, "192.0.2.11", ["someone@remote.test", "alice@example.test"], send_data=True
        ),
    ),
    Scenario(
        "SMTP from 2001:db8::11: RCPT someone@remote.test refused (relay)",
        lambda ct: smtp_session(ct, "2001:db8::11", ["someone@remote.test"]),
    ),
]


@contextlib.contextmanager
def dovecot_setup(ct: Container, setup: str | None) -> Iterator[None]:
    """The Dovecot variation a group of scenarios needs, undone afterwards."""
    if setup is None:
        yield
    elif setup == "tls":
        with dovecot_tls(ct):
            yield
    elif setup == "trusted":
        with dovecot_trusting(ct, TRUSTED):
            yield
    elif setup == "any-name":
        with dovecot_any_user_name(ct, INJECTED_NAMES, INJECTION_PASSWORD):
            yield
    else:
        raise ValueError(f"unknown set-up {setup!r}")


Captured = list[tuple[str, list[dict[str, Any]], str]]


Setup = Callable[[Container, str | None], contextlib.AbstractContextManager[None]]
"""A server's variations by name (a Scenario's setup), as a context manager undoing it."""
Collected = TypeVar("Collected")


def run_scenarios(
    ct: Container,
    scenarios: list[Scenario],
    setup: Setup,
    collect: Callable[[Scenario, str], Collected],
    client_errors: tuple[type[Exception], ...] = (),
) -> list[Collected]:
    """Run each scenario, grouped by set-up (each group inside `setup`), and once journald
    has synced return what `collect(scenario, cursor before it)` made of each.

    A `client_errors` exception ends its scenario, said in the output, not the capture.
    (capture_servers.py runs its servers' scenarios with this too.)
    """
    collected: list[Collected] = []
    for name in dict.fromkeys(scenario.setup for scenario in scenarios):
        with setup(ct, name):
            for scenario in (s for s in scenarios if s.setup == name):
                cursor = ct.journal_cursor()
                try:
                    print(f"{scenario.title}: {scenario.action(ct)}", flush=True)
                except client_errors as error:  # the client's error is the scenario's end
                    print(f"{scenario.title}: client error {error}", flush=True)
                time.sleep(0.5)  # let the daemons, their log process and journald catch up
                ct.run(["journalctl", "--sync"])
                collected.append(collect(scenario, cursor))
    return collected


def capture(ct: Container, scenarios: list[Scenario], match: str) -> Captured:
    """Run each scenario (grouped by set-up); return (title, json entries, export text)."""
    return run_scenarios(
        ct,
        scenarios,
        dovecot_setup,
        lambda scenario, cursor: (
            scenario.title,
            ct.journal(match, after_cursor=cursor),
            export_entries(ct, match, cursor),
        ),
    )


def export_entries(ct: Container, match: str, cursor: str) -> str:
    """journalctl -o export of the entries after cursor (see Container.journal on why
    --cursor and not --after-cursor)."""
    out = ct.run(["journalctl", "--no-pager", "-o", "export", match, f"--cursor={cursor}"]).stdout
    entries = [e for e in out.split("\n\n") if e.strip()]
    kept = [e for e in entries if f"__CURSOR={cursor}\n" not in e + "\n"]
    return "".join(e.strip("\n") + "\n\n" for e in kept)


def package_versions(ct: Container, *packages: str) -> dict[str, str]:
    """Installed versions as dpkg says them, for the fixture headers."""
    out = ct.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *packages]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def provenance(ct: Container, what: str) -> str:
    """Where, how and when the entries below were captured: the header's first lines."""
    versions = package_versions(ct, "dovecot-core", "postfix", "systemd")
    debian = ct.read_file("/etc/debian_version").strip()
    release = ct.target.release
    return (
        f"# {what}\n"
        f"# Captured {time.strftime('%Y-%m-%d')} on Debian {debian} ({release}) booted in the\n"
        "# system-test container (systemd-nspawn, tests/system/container.py), by\n"
        f"#   /usr/bin/python3 tests/system/capture_fixtures.py --release {release}\n"
        f"# Packages: dovecot-core {versions['dovecot-core']}, postfix {versions['postfix']},\n"
        f"# systemd {versions['systemd']}.\n"
    )


FORMAT = """\
# Format: lines starting with "#" are comments; "# --- scenario: ..." names what the
# client did, and the entries it caused follow, one per line exactly as
# `journalctl -o json` prints it (all values are strings).  "(failure)" in a title:
# no login may come of it; otherwise the first "from ADDRESS" is the address of the
# one successful login.  The same entries in `journalctl -o export` format are in
# dovecot-login-lines.export.  Server (lip) addresses are 192.0.2.1 / 2001:db8::1,
# the hostname mx.example.test; auth_failure_delay and pam_unix's delay are off;
# the set-up is tests/system/mailhost.py's (TLS, login_trusted_networks and the
# permissive user names only for the scenarios that say so).
#
"""

FACTS_COMMON = """\
# Facts worth knowing (all visible below):
# * Every line is written by Dovecot's log process: _PID is that process,
#   _COMM=log, _EXE=/usr/lib/dovecot/log, _CMDLINE=dovecot/log, _UID=0, _GID=0,
#   SYSLOG_IDENTIFIER=dovecot, _TRANSPORT=syslog, SYSLOG_FACILITY=2 (mail),
#   _SYSTEMD_UNIT=dovecot.service.  The login process name is only in MESSAGE
#   ("pop3-login: ...", "imap-login: ...").
# * pam_unix messages come from the auth worker directly: SYSLOG_IDENTIFIER=auth,
#   _COMM=auth, _EXE=/usr/lib/dovecot/auth, SYSLOG_FACILITY=10 (authpriv),
#   still _SYSTEMD_UNIT=dovecot.service.
# * User mail processes' lines ("pop3(alice)<pid><session>: Disconnected: ...")
#   also come from the log process; the user name is the client's to choose there too.
# * IPv6 addresses appear bare (rip=2001:db8::10), without brackets.
# * Dovecot's anvil "auth penalty" delays further attempts from an IP that just
#   failed: every scenario uses an address of its own.
"""

FACTS = {
    "2.3": """\
# * Success: "<proto>-login: Login: user=<alice>, method=PLAIN, rip=..., lip=...,
#              mpid=...[, TLS|, secured], session=<...>"
#   No login: "<proto>-login: Disconnected[: Connection closed] (auth failed, 1
#   attempts in 0 secs): user=<alice>, ...", "Aborted login (...)", "Disconnected
#   (no auth attempts in 0 secs): user=<>, ...".
""",
    "2.4": """\
# * Success: "<proto>-login: Logged in: user=<alice>, method=PLAIN, rip=..., lip=...,
#              mpid=...[, TLS|, secured], session=<...>"  (2.3 said "Login:")
#   No login: "<proto>-login: Login aborted: <why> (<what happened>) (<reason code>):
#   user=<...>, ...", e.g. "Login aborted: Connection closed (auth failed, 1 attempts
#   in 0 secs) (auth_failed): ...", and "Authenticate PLAIN failed: Aborted: ...".
""",
}

POSTFIX_NOTE = """\
# Format as in dovecot-login-lines.txt.  mynetworks = 127.0.0.0/8 [::1]/128, clients
# come from 192.0.2.11 / 2001:db8::11, smtpd_peername_lookup = no (hence "unknown[ip]").
"""


def write_json_lines(path: Path, header: str, captured: Captured) -> None:
    with path.open("w") as out:
        out.write(header)
        for title, entries, _ in captured:
            out.write(f"# --- scenario: {title}\n")
            for entry in entries:
                out.write(json.dumps(entry, sort_keys=True) + "\n")


def capture_release(target: Target) -> Path:
    """Boot the target, capture every scenario, write fixtures/<release>/; return that dir."""
    directory = FIXTURES / target.release
    directory.mkdir(parents=True, exist_ok=True)
    with Container(target) as ct:
        configure_mail_host(ct)
        version = dovecot_version(ct)
        full_version = ct.run(["dovecot", "--version"]).stdout.split()[0]
        postfix = postfix_unit(ct)
        dovecot_header = (
            provenance(ct, f"Real journal entries of Dovecot {full_version} (dovecot.service).")
            + FORMAT
            + FACTS_COMMON
            + FACTS[version]
        )
        postfix_header = (
            provenance(ct, f"Real journal entries of Postfix's smtpd ({postfix}).") + POSTFIX_NOTE
        )
        dovecot = capture(ct, DOVECOT_SCENARIOS, "_SYSTEMD_UNIT=dovecot.service")
        smtpd = capture(ct, POSTFIX_SCENARIOS, f"_SYSTEMD_UNIT={postfix}")
    write_json_lines(directory / "dovecot-login-lines.txt", dovecot_header, dovecot)
    with (directory / "dovecot-login-lines.export").open("w") as out:
        out.write("".join(export for _, _, export in dovecot))
    write_json_lines(directory / "postfix-smtpd-lines.txt", postfix_header, smtpd)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", choices=RELEASES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for release in args.release or RELEASES:
        directory = capture_release(TARGETS[f"{release}+redis"])
        print(f"wrote fixtures to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
