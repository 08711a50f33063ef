"""Regenerate tests/system/fixtures/<release>/{courier,cyrus}-login-lines.txt from the real daemons.

capture_fixtures.py does this for Dovecot; Courier and Cyrus conflict with
Dovecot as packages, so each is booted from a root file system of its own
(container.TARGETS `bookworm+courier`, `trixie+cyrus`...), set up by
serverhost.py, and made to log every kind of login and non-login there is:
successes over POP3 and IMAP, plain, STARTTLS and implicit TLS, IPv4 (which
Courier writes IPv4-mapped) and IPv6; a wrong password, an unknown user; every
way to leave without a login; user names that carry the server's own
separators and another address, refused and (Courier's userdb) accepted; and,
for Cyrus, reverse-DNS names that the client controls, carrying brackets and
another address.

Run as root on the host::

    /usr/bin/python3 tests/system/capture_servers.py [--target bookworm+courier] ...

The format is capture_fixtures.py's (FORMAT there): "# --- scenario:" lines,
then the entries of the server's units and of its authentication daemon, one
JSON object per line as `journalctl -o json` prints it. "(failure)" in a title:
no login may come of it; otherwise the first "from ADDRESS" is the address of
the one successful login.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))  # pbs_activated, for mailhost

from capture_fixtures import (  # noqa: E402
    FIXTURES,
    INJECTED,
    INJECTION_PASSWORD,
    Scenario,
    abort,
    imap,
    package_versions,
    pop3,
    run_scenarios,
)
from container import COURIER, CYRUS, TARGETS, Container, Target  # noqa: E402
from serverhost import (  # noqa: E402
    HOSTILE_NAMES,
    UNITS,
    configure_server_host,
    courier_any_user_name,
)

SERVER_TARGETS = ("bookworm+courier", "trixie+courier", "bookworm+cyrus", "trixie+cyrus")
INJECTED_NAMES = [
    f"x, ip=[{INJECTED}]",
    f"y, ip=[{INJECTED}], port=[110], protocol=IMAP",
    f"z [{INJECTED}] alice plaintext User logged in",
]
"""User names imitating Courier's (`, ip=[...]`) and Cyrus's (`[addr] user mech`) lines."""
AUTH_UNITS = {COURIER.name: ("courier-authdaemon.service",), CYRUS.name: ("saslauthd.service",)}
PACKAGES = {
    COURIER.name: ("courier-pop", "courier-imap", "courier-authdaemon"),
    CYRUS.name: ("cyrus-imapd", "cyrus-pop3d", "cyrus-common", "sasl2-bin"),
}


def common_scenarios() -> list[Scenario]:
    """What every server is made to log (the set-up None: the plain host)."""
    return [
        Scenario(
            "POP3 login alice/secret from 192.0.2.10 (success)",
            pop3("192.0.2.10", "alice", "secret"),
        ),
        Scenario(
            "IMAP login alice/secret from 192.0.2.11 (success)",
            imap("192.0.2.11", "alice", "secret"),
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
        Scenario(
            "POP3 connection closed after the greeting, from 192.0.2.21 (failure)",
            abort("pop3", "192.0.2.21", "close"),
        ),
        Scenario(
            "IMAP connection closed after the greeting, from 2001:db8::17 (failure)",
            abort("imap", "2001:db8::17", "close"),
        ),
        Scenario(
            "POP3 QUIT without a login, from 192.0.2.22 (failure)",
            abort("pop3", "192.0.2.22", "quit"),
        ),
        Scenario(
            "IMAP LOGOUT without a login, from 192.0.2.23 (failure)",
            abort("imap", "192.0.2.23", "quit"),
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
        Scenario(
            f"POP3 login as the unknown injected name <{INJECTED_NAMES[0]}>"
            f" from 192.0.2.28 (failure)",
            pop3("192.0.2.28", INJECTED_NAMES[0], INJECTION_PASSWORD),
        ),
        Scenario(
            f"IMAP login as the unknown injected name <{INJECTED_NAMES[1]}>"
            f" from 192.0.2.29 (failure)",
            imap("192.0.2.29", INJECTED_NAMES[1], INJECTION_PASSWORD),
        ),
        Scenario(
            f"IMAP login as the unknown injected name <{INJECTED_NAMES[2]}>"
            f" from 2001:db8::19 (failure)",
            imap("2001:db8::19", INJECTED_NAMES[2], INJECTION_PASSWORD),
        ),
        Scenario(
            "POP3 login alice/secret from 127.0.0.1 on loopback (success; the reader ignores it)",
            pop3("127.0.0.1", "alice", "secret"),
        ),
        Scenario(
            "POP3 STLS login alice/secret from 192.0.2.14 (TLS success)",
            pop3("192.0.2.14", "alice", "secret", "starttls"),
        ),
        Scenario(
            "IMAP STARTTLS login bob/bob-secret from 192.0.2.15 (TLS success)",
            imap("192.0.2.15", "bob", "bob-secret", "starttls"),
        ),
        Scenario(
            "POP3S (port 995) login alice/secret from 192.0.2.16 (TLS success)",
            pop3("192.0.2.16", "alice", "secret", "implicit"),
        ),
        Scenario(
            "IMAPS (port 993) login alice/secret from 192.0.2.31 (TLS success)",
            imap("192.0.2.31", "alice", "secret", "implicit"),
        ),
        Scenario(
            "POP3S (port 995) login bob/bob-secret from 2001:db8::1a (IPv6 TLS success)",
            pop3("2001:db8::1a", "bob", "bob-secret", "implicit"),
        ),
        Scenario(
            "IMAPS (port 993) login alice/secret from 2001:db8::14 (IPv6 TLS success)",
            imap("2001:db8::14", "alice", "secret", "implicit"),
        ),
        Scenario(
            "IMAP STARTTLS login alice with a wrong password from 192.0.2.17 (failure)",
            imap("192.0.2.17", "alice", "wrong", "starttls"),
        ),
        Scenario(
            "IMAPS connection closed during the TLS handshake, from 192.0.2.18 (failure)",
            abort("imap", "192.0.2.18", "tls-close"),
        ),
        Scenario(
            "POP3S connection closed during the TLS handshake, from 2001:db8::15 (failure)",
            abort("pop3", "2001:db8::15", "tls-close"),
        ),
    ]


def courier_scenarios() -> list[Scenario]:
    """Courier's extra: injected names that log in (its userdb takes any name)."""
    return [
        Scenario(
            f"POP3 login as <{INJECTED_NAMES[0]}> (a userdb user)"
            f" from 192.0.2.30 (injected-name success)",
            pop3("192.0.2.30", INJECTED_NAMES[0], INJECTION_PASSWORD),
            "any-name",
        ),
        Scenario(
            f"IMAP login as <{INJECTED_NAMES[1]}> (a userdb user) from 2001:db8::18 "
            "(IPv6 injected-name success)",
            imap("2001:db8::18", INJECTED_NAMES[1], INJECTION_PASSWORD),
            "any-name",
        ),
        Scenario(
            f"IMAPS login as <{INJECTED_NAMES[2]}> (a userdb user)"
            f" from 192.0.2.32 (injected-name success)",
            imap("192.0.2.32", INJECTED_NAMES[2], INJECTION_PASSWORD, "implicit"),
            "any-name",
        ),
    ]


def cyrus_scenarios() -> list[Scenario]:
    """Cyrus's extra: clients whose reverse-DNS name (serverhost.HOSTILE_NAMES) is hostile."""
    first, second, third, v6 = HOSTILE_NAMES
    return [
        Scenario(
            f"POP3 login alice/secret"
            f" from {first} named {HOSTILE_NAMES[first]} (hostile-name success)",
            pop3(first, "alice", "secret"),
        ),
        Scenario(
            f"IMAP login alice/secret"
            f" from {second} named {HOSTILE_NAMES[second]} (hostile-name success)",
            imap(second, "alice", "secret"),
        ),
        Scenario(
            f"IMAPS login bob/bob-secret from {third} named {HOSTILE_NAMES[third]} "
            "(hostile-name TLS success)",
            imap(third, "bob", "bob-secret", "implicit"),
        ),
        Scenario(
            f"POP3 login bob/bob-secret"
            f" from {v6} named {HOSTILE_NAMES[v6]} (IPv6 hostile-name success)",
            pop3(v6, "bob", "bob-secret"),
        ),
        Scenario(
            f"IMAP login alice with a wrong password"
            f" from {first} named {HOSTILE_NAMES[first]} (failure)",
            imap(first, "alice", "wrong"),
        ),
    ]


@contextlib.contextmanager
def server_setup(ct: Container, setup: str | None) -> Iterator[None]:
    """The variation a group of scenarios needs, undone afterwards."""
    if setup is None:
        yield
    elif setup == "any-name":
        with courier_any_user_name(ct, INJECTED_NAMES, INJECTION_PASSWORD):
            yield
    else:
        raise ValueError(f"unknown set-up {setup!r}")


Captured = list[tuple[str, list[dict[str, Any]]]]


def capture(ct: Container, scenarios: list[Scenario], matches: list[str]) -> Captured:
    """Run each scenario (grouped by set-up); return (title, json entries) for each."""
    return run_scenarios(
        ct,
        scenarios,
        server_setup,
        lambda scenario, cursor: (scenario.title, ct.journal(*matches, after_cursor=cursor)),
        client_errors=(RuntimeError,),
    )


FACTS = {
    COURIER.name: """\
Facts worth knowing (all visible below):
* Each daemon logs through its own courierlogger (_COMM=courierlogger,
  SYSLOG_IDENTIFIER pop3d, pop3d-ssl, imapd, imapd-ssl, _TRANSPORT=syslog) from its
  own unit: courier-pop.service (110, STLS too), courier-pop-ssl.service (995),
  courier-imap.service (143, STARTTLS too), courier-imap-ssl.service (993).
  pam_unix's lines come from courier-authdaemon.service.
* Success: "LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[46927]" (POP3),
  "..., protocol=IMAP" (IMAP); 5.2 adds ", stls=1" / ", starttls=1" over TLS.
  IPv4 clients are written IPv4-mapped, IPv6 ones bare.
* No login: "LOGIN FAILED, user=..., ip=[...], port=[...]", "LOGIN FAILED,
  method=PLAIN, ..." (cancelled AUTHENTICATE), "Disconnected, ip=[...]",
  "LOGOUT, ip=[...]" (no user=); a logged-in session ends "LOGOUT, user=...".
* The user name is written as the client sent it, before the address.
""",
    CYRUS.name: """\
Facts worth knowing (all visible below):
* cyrmaster (cyrus-imapd.service) runs every daemon; they log with
  SYSLOG_IDENTIFIER cyrus/pop3, cyrus/imap, cyrus/pop3s, cyrus/imaps,
  _TRANSPORT=syslog. pam_unix's lines come from saslauthd.service.
* Success: "login: [192.0.2.10] alice plaintext User logged in SESSIONID=<...>",
  "plaintext+TLS" over TLS, the same for POP3 and IMAP; a client with a reverse-DNS
  name (here from /etc/hosts, serverhost.HOSTILE_NAMES) has it before the address,
  verbatim: "login: evil[192.0.2.50] [192.0.2.40] alice ...".
* No login: "badlogin: [addr] plaintext (user) [SASL(-13): ...]" or "... invalid
  user"; a logged-in session ends "USAGE alice user: ... sys: ..." (pop3d's
  "counts: ..." comes with or without a login).
* Not recorded here, seen while writing the set-up: Debian's popminpoll: 1 makes
  pop3d refuse a second login within a minute *after* it logged "User logged in"
  (the password was right); the set-up has popminpoll: 0.
""",
}


def header(ct: Container, server: str, units: tuple[str, ...]) -> str:
    """Where, how and when the entries were captured, and the format."""
    versions = package_versions(ct, *PACKAGES[server], "postfix", "systemd")
    debian = ct.read_file("/etc/debian_version").strip()
    release = ct.target.release
    packages = ", ".join(f"{name} {version}" for name, version in versions.items())
    lines = [
        f"Real journal entries of {server.capitalize()} ({', '.join(units)}),",
        f"and of its authentication daemon ({', '.join(AUTH_UNITS[server])}).",
        f"Captured {time.strftime('%Y-%m-%d')} on Debian {debian} ({release}) booted in the",
        "system-test container (systemd-nspawn, tests/system/container.py), set up by",
        "tests/system/serverhost.py, by",
        f"  /usr/bin/python3 tests/system/capture_servers.py --target {ct.target.name}",
        f"Packages: {packages}.",
        'Format: "#" lines are comments; "# --- scenario: ..." names what the client did,',
        "and the entries it caused follow, one per line exactly as `journalctl -o json`",
        'prints it. "(failure)" in a title: no login may come of it; otherwise the first',
        '"from ADDRESS" is the address of the one successful login. Server addresses',
        "are 192.0.2.1 / 2001:db8::1; pam_unix's failure delay is off.",
    ]
    lines += ["", *FACTS[server].splitlines()]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines) + "#\n"


def capture_target(target: Target) -> Path:
    """Boot the target, capture every scenario, write fixtures/<release>/<server>-login-lines.txt.

    Returns the file written.
    """
    server = target.server.name
    scenarios = common_scenarios() + (
        courier_scenarios() if target.server is COURIER else cyrus_scenarios()
    )
    units = UNITS[server]
    matches = [f"_SYSTEMD_UNIT={unit}" for unit in (*units, *AUTH_UNITS[server])]
    path = FIXTURES / target.release / f"{server}-login-lines.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with Container(target) as ct:
        configure_server_host(ct)
        text = header(ct, server, units)
        captured = capture(ct, scenarios, matches)
    with path.open("w") as out:
        out.write(text)
        for title, entries in captured:
            out.write(f"# --- scenario: {title}\n")
            for entry in entries:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=SERVER_TARGETS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    for name in args.target or SERVER_TARGETS:
        print(f"wrote {capture_target(TARGETS[name])}")
    return 0


if __name__ == "__main__":
    assert CYRUS.name in UNITS  # both servers are described in serverhost
    sys.exit(main())
