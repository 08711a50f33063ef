"""Turn a booted test container into a realistic Postfix + Dovecot + Redis mail host.

Why: pbs-activated decides about relaying from Dovecot login lines in the
journal and answers Postfix's policy requests.  The system tests need the
genuine article on both ends: Debian's Postfix and Dovecot (bookworm's 3.7 and
2.3, trixie's 3.10 and 2.4) logging to journald from their own units, clients
coming from addresses that are *not* in mynetworks, and an SMTP server that
answers RCPT for a remote domain.  The store is the target's (Redis or Valkey).

Layout after ``configure_mail_host``:

* on ``lo``: server addresses 192.0.2.1 and 2001:db8::1, client addresses
  CLIENTS_V4 / CLIENTS_V6 (TEST-NET-1 / documentation prefix, never routed);
* Postfix on all addresses, mynetworks = 127.0.0.0/8 [::1]/128, local domain
  example.test, all other domains "delivered" by the discard transport, so
  relaying to someone@remote.test is accepted at RCPT once authorised;
* Dovecot POP3 + IMAP, plaintext auth without TLS, system users via PAM,
  configured in the syntax of the installed major version (2.3 or 2.4);
* local users alice / bob with the passwords in USERS.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from container import Container

from pbs_activated.admin import postfix

SERVER_V4 = "192.0.2.1"
SERVER_V6 = "2001:db8::1"
# Enough client addresses that every system test can log in from addresses of its
# own: an authorization, or Dovecot's auth penalty after a failed login, then never
# leaks from one test into the next.
CLIENTS_V4 = [f"192.0.2.{n}" for n in range(10, 100)]
CLIENTS_V6 = [f"2001:db8::{n:x}" for n in range(0x10, 0x40)]
USERS = {"alice": "secret", "bob": "bob-secret"}
LOCAL_DOMAIN = "example.test"
REMOTE_DOMAIN = "remote.test"
POLICY_SERVICE = postfix.POLICY_SERVICE

MAILCLIENT = Path(__file__).with_name("mailclient.py")
HOST_PYTHON = "/usr/bin/python3"  # Debian's; the pyenv python3 on PATH is not wanted

RELAY_RESTRICTIONS = ", ".join([*postfix.PERMITTED_FIRST, postfix.REFUSAL])

POSTFIX_SETTINGS = {
    "myhostname": "mx.example.test",
    "mydomain": LOCAL_DOMAIN,
    "myorigin": "/etc/mailname",
    "mydestination": f"$myhostname, {LOCAL_DOMAIN}, localhost.localdomain, localhost",
    "mynetworks": "127.0.0.0/8 [::1]/128",
    "inet_interfaces": "all",
    "inet_protocols": "all",
    "smtpd_relay_restrictions": RELAY_RESTRICTIONS,
    # No network in the container: every non-local domain goes to "discard",
    # so accepted relay mail leaves the queue at once instead of deferring.
    "default_transport": "discard:no remote delivery in tests",
    "relay_transport": "discard:no remote delivery in tests",
    # Reverse DNS of 192.0.2.x fails anyway; don't even try (shows "unknown[ip]").
    "smtpd_peername_lookup": "no",
    "smtpd_tls_security_level": "none",
}

DOVECOT_SNIPPET = "/etc/dovecot/conf.d/99-pbs-tests.conf"
# One snippet per major version: 2.4 renamed or removed most settings, and a
# 2.3 name is an error there (and the other way round). The meaning is the same.
DOVECOT_CONF = {
    "2.3": """\
# Written by tests/system/mailhost.py: plaintext logins for system tests (Dovecot 2.3).
listen = *, ::
disable_plaintext_auth = no
ssl = no
auth_mechanisms = plain login
# Log why an authentication failed (e.g. "Password mismatch").
auth_verbose = yes
# Failed logins would otherwise take ~2s here plus ~2s in pam_unix (see PAM_DOVECOT).
auth_failure_delay = 0
""",
    "2.4": """\
# Written by tests/system/mailhost.py: plaintext logins for system tests (Dovecot 2.4).
listen = *, ::
auth_allow_cleartext = yes
ssl = no
auth_mechanisms = plain login
# Log why an authentication failed (e.g. "Password mismatch").
auth_verbose = yes
# Failed logins would otherwise take ~2s here plus ~2s in pam_unix (see PAM_DOVECOT).
auth_failure_delay = 0
""",
}

# Debian's /etc/pam.d/dovecot includes common-auth; this is the same stack with
# pam_unix's failure delay turned off so failed-login tests stay fast.
PAM_DOVECOT = """\
#%PAM-1.0
# Written by tests/system/mailhost.py: Debian's common-auth minus the fail delay.
auth	[success=1 default=ignore]	pam_unix.so nullok nodelay
auth	requisite			pam_deny.so
auth	required			pam_permit.so
@include common-account
@include common-session
"""


def add_addresses(ct: Container) -> None:
    """Put the server and client test addresses on the container's loopback.

    --private-network leaves only lo; /32 and /128 host addresses on lo are
    local addresses, so a client can bind one as its source and connect to
    another, and the server sees the client address as the peer.
    """
    ct.run(
        [
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.lo.disable_ipv6=0",
        ]
    )
    batch = [f"addr replace {addr}/32 dev lo" for addr in [SERVER_V4, *CLIENTS_V4]]
    batch += [f"addr replace {addr}/128 dev lo nodad" for addr in [SERVER_V6, *CLIENTS_V6]]
    ct.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")


def add_users(ct: Container) -> None:
    """Create the mail users as real system users (PAM / shadow passwords)."""
    for user, password in USERS.items():
        if ct.run(["id", user], check=False).returncode != 0:
            ct.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
        ct.run(["chpasswd"], input=f"{user}:{password}\n")
        ct.run(
            ["install", "-m", "0660", "-o", user, "-g", "mail", "/dev/null", f"/var/mail/{user}"]
        )


def configure_postfix(ct: Container) -> None:
    """Apply POSTFIX_SETTINGS and restart (inet_interfaces needs a restart)."""
    ct.run(["postconf", "-e", *(f"{k}={v}" for k, v in POSTFIX_SETTINGS.items())])
    ct.run(["newaliases"])
    ct.run(["systemctl", "restart", "postfix.service"])


def dovecot_version(ct: Container) -> str:
    """The installed Dovecot's major version, `2.3` or `2.4`, from `dovecot --version`.

    Asked of the daemon rather than assumed from the release: what decides the
    config syntax and the log format is the version installed, whatever the suite.
    """
    out = ct.run(["dovecot", "--version"]).stdout  # "2.3.19.1 (9b53102964)", "2.4.1-4 (...)"
    match = re.match(r"(\d+\.\d+)[.-]", out.strip())
    if match is None or match.group(1) not in DOVECOT_CONF:
        raise RuntimeError(f"no test configuration for Dovecot {out.strip()!r}")
    return match.group(1)


def configure_dovecot(ct: Container) -> None:
    """Add a last-included conf.d snippet that allows plaintext logins, and restart."""
    ct.write_file(DOVECOT_SNIPPET, DOVECOT_CONF[dovecot_version(ct)])
    ct.write_file("/etc/pam.d/dovecot", PAM_DOVECOT)
    ct.run(["doveconf", "-n"])  # fail early, with the parser's message, on a bad config
    ct.run(["systemctl", "restart", "dovecot.service"])


LOGIN_VERB = {"2.3": "Login", "2.4": "Logged in"}
"""What Dovecot's `<service>-login:` line says of a successful login, by version."""


def login_verb(ct: Container) -> str:
    """`Login` (2.3) or `Logged in` (2.4): the installed Dovecot's success wording."""
    return LOGIN_VERB[dovecot_version(ct)]


def postfix_unit(ct: Container) -> str:
    """The unit Postfix's daemons log from: bookworm's `postfix@-.service` (one unit per
    instance) or trixie's `postfix.service` (no instance units any more)."""
    state = ct.systemctl("is-active", "postfix@-.service", check=False).stdout.strip()
    return "postfix@-.service" if state == "active" else "postfix.service"


PRODUCT_STORE_UNIT = "pbs-store.service"


def store_unit(ct: Container) -> str:
    """The unit holding the authorizations: the package's own store when the installed
    package has one (0.2.0 on: the target's server binary, run as pbs-store.service),
    otherwise the target's `redis-server.service` or `valkey-server.service`.

    Asked of systemd, not assumed from a version: what a store outage test must stop
    is whatever the product really talks to.
    """
    state = ct.systemctl("show", "-P", "LoadState", PRODUCT_STORE_UNIT, check=False)
    return PRODUCT_STORE_UNIT if state.stdout.strip() == "loaded" else ct.target.store.unit


# --------------------------------------------------------------------------
# Dovecot variations: TLS, trusted networks, any user name (each undone after)
# --------------------------------------------------------------------------

TLS_CERT = "/etc/dovecot/private/pbs-test.pem"
TLS_KEY = "/etc/dovecot/private/pbs-test.key"
TLS_SNIPPET = "/etc/dovecot/conf.d/99-pbs-tls.conf"  # sorts after DOVECOT_SNIPPET
TLS_CONF = {
    "2.3": f"ssl = yes\nssl_cert = <{TLS_CERT}\nssl_key = <{TLS_KEY}\n",
    "2.4": f"ssl = yes\nssl_server_cert_file = {TLS_CERT}\nssl_server_key_file = {TLS_KEY}\n",
}
TRUSTED_SNIPPET = "/etc/dovecot/conf.d/99-pbs-trusted.conf"
INJECTION_SNIPPET = "/etc/dovecot/conf.d/98-pbs-injection.conf"
INJECTION_PASSWD = "/etc/dovecot/pbs-injection.passwd"
# Any character in a user name, and extra users from a passwd-file (Debian's
# PAM passdb stays first): 2.4 names the passdb and userdb blocks by driver and
# spells the file and the static fields as settings of their own.
INJECTION_CONF = {
    "2.3": f"""\
# Written by tests/system/mailhost.py: any character in a user name, and
# extra users from a passwd-file whose names imitate Dovecot's log format.
auth_username_chars =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {INJECTION_PASSWD}
}}
userdb {{
  driver = static
  args = uid=alice gid=alice home=/home/alice
}}
""",
    "2.4": f"""\
# Written by tests/system/mailhost.py: any character in a user name, and
# extra users from a passwd-file whose names imitate Dovecot's log format.
auth_username_chars =
passdb passwd-file {{
  passwd_file_path = {INJECTION_PASSWD}
}}
userdb static {{
  fields {{
    uid = alice
    gid = alice
    home = /home/alice
  }}
}}
""",
}


def reconfigure_dovecot(ct: Container, restart: bool = False) -> None:
    """Check the configuration (the parser's message on a mistake), then apply it.

    A reload is enough for passdbs and names; listeners and TLS need a restart.
    """
    ct.run(["doveconf", "-n"])
    ct.systemctl("restart" if restart else "reload", "dovecot.service")
    if restart:
        wait_for_listeners(ct, (110, 143))


def make_certificate(ct: Container, cert: str, key: str, owner: str | None = None) -> None:
    """A fresh self-signed certificate for mx.example.test (RSA, 7 days) at `cert`, its
    unencrypted key at `key`, made in the container; given to `owner` ("user:group")
    when one is named, else left as openssl writes them (root's)."""
    ct.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=mx.example.test",
            "-keyout",
            key,
            "-out",
            cert,
        ]
    )
    if owner is not None:
        ct.run(["chown", owner, cert, key])


@contextlib.contextmanager
def dovecot_tls(ct: Container) -> Iterator[None]:
    """Dovecot with TLS (STARTTLS on 110/143, implicit on 995/993) and a fresh
    self-signed certificate made in the container; plaintext logins stay allowed."""
    make_certificate(ct, TLS_CERT, TLS_KEY)
    ct.write_file(TLS_SNIPPET, TLS_CONF[dovecot_version(ct)])
    reconfigure_dovecot(ct, restart=True)
    wait_for_listeners(ct, (993, 995))
    try:
        yield
    finally:
        ct.run(["rm", "-f", TLS_SNIPPET, TLS_CERT, TLS_KEY])
        reconfigure_dovecot(ct, restart=True)


@contextlib.contextmanager
def dovecot_trusting(ct: Container, networks: list[str]) -> Iterator[None]:
    """Dovecot treating clients from `networks` as trusted (login_trusted_networks):
    their connections count as secured, which the login line says (`secured`)."""
    ct.write_file(TRUSTED_SNIPPET, f"login_trusted_networks = {' '.join(networks)}\n")
    reconfigure_dovecot(ct)
    try:
        yield
    finally:
        ct.run(["rm", "-f", TRUSTED_SNIPPET])
        reconfigure_dovecot(ct)


@contextlib.contextmanager
def dovecot_any_user_name(ct: Container, names: list[str], password: str) -> Iterator[None]:
    """Dovecot accepting user names with any characters, and `names` as users with `password`.

    Debian's Dovecot refuses `,` `=` `<` and spaces in names (auth_username_chars)
    before it authenticates; a site may allow them, and then a successful login
    line carries whatever the client chose as its name. Names must be lower
    case: Dovecot lowercases a name (%Lu / %{user | lower}) before the lookup.
    """
    ct.write_file(INJECTION_PASSWD, "".join(f"{name}:{{PLAIN}}{password}\n" for name in names))
    ct.write_file(INJECTION_SNIPPET, INJECTION_CONF[dovecot_version(ct)])
    reconfigure_dovecot(ct)
    try:
        yield
    finally:
        ct.run(["rm", "-f", INJECTION_SNIPPET, INJECTION_PASSWD])
        reconfigure_dovecot(ct)


def wait_for_listeners(
    ct: Container, ports: tuple[int, ...] = (25, 110, 143, 6379), timeout: float = 30
) -> None:
    """Wait until every port has a listening TCP socket inside the container."""
    deadline = time.monotonic() + timeout
    missing: set[int] = set(ports)
    while time.monotonic() < deadline:
        out = ct.run(["ss", "-Hltn"]).stdout
        listening = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()}
        missing = set(ports) - listening
        if not missing:
            return
        time.sleep(0.2)
    raise TimeoutError(f"ports not listening after {timeout}s: {sorted(missing)}")


def configure_mail_host(ct: Container) -> None:
    """Make the booted container the mail host described in the module docstring."""
    add_addresses(ct)
    add_users(ct)
    configure_postfix(ct)
    configure_dovecot(ct)
    ct.run(["systemctl", "enable", "--now", store_unit(ct)])
    wait_for_listeners(ct)


def enable_policy_service(ct: Container, service: str = POLICY_SERVICE) -> None:
    """Ask the pbs policy service before rejecting unauthorised relaying: the line we
    recommend (pbs_activated.admin.postfix), for `service`."""
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={postfix.relay_restrictions(service)}"])
    ct.run(["postfix", "reload"])


def disable_policy_service(ct: Container) -> None:
    """Back to the plain relay restrictions of configure_mail_host."""
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={RELAY_RESTRICTIONS}"])
    ct.run(["postfix", "reload"])


def without_idle_smtpd(ct: Container, timeout: float = 10) -> None:
    """`postfix reload` and wait until the smtpd processes of earlier sessions are gone.

    Why: an smtpd process keeps its policy connection across the SMTP sessions it
    serves (up to smtpd_policy_service_max_idle), so the next session would be
    answered by whatever accepted that connection. Idle smtpd processes exit at
    once on a reload (they close their policy connection cleanly); the next
    session gets a new one, which connects anew.
    """
    ct.run(["postfix", "reload"])
    deadline = time.monotonic() + timeout
    while ct.run(["pgrep", "-x", "smtpd"], check=False).returncode != 1:  # 1: none found
        if time.monotonic() > deadline:
            raise TimeoutError(f"smtpd processes still running {timeout}s after a reload")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# Clients: the host's python running mailclient.py in the container's netns
# --------------------------------------------------------------------------


def _client(ct: Container, *args: str) -> dict[str, Any]:
    proc = ct.netns_run([HOST_PYTHON, str(MAILCLIENT), *args], check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mailclient {' '.join(args)} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def smtp_session(
    ct: Container,
    source: str,
    rcpts: list[str],
    mail_from: str = "sender@client.example.test",
    send_data: bool = False,
) -> dict[str, Any]:
    """Full answer record of one SMTP session (connect, ehlo, mail, rcpts, data)."""
    args = ["smtp", "--source", source, "--mail-from", mail_from]
    for rcpt in rcpts:
        args += ["--rcpt", rcpt]
    if send_data:
        args.append("--send-data")
    return _client(ct, *args)


def smtp_try(
    ct: Container, source: str, rcpts: list[str], mail_from: str = "sender@client.example.test"
) -> list[tuple[int, str]]:
    """The (code, message) answers to RCPT TO for each recipient, from source."""
    result = smtp_session(ct, source, rcpts, mail_from)
    return [(int(code), str(msg)) for code, msg in result["rcpts"]]


def smtp_sessions_at_once(
    ct: Container,
    sources: list[str],
    rcpts: list[str],
    mail_from: str = "sender@client.example.test",
) -> list[dict[str, Any]]:
    """One SMTP session per source, all open together, each asked every RCPT in turn.

    Postfix serves each session with an smtpd process (and policy connection) of
    its own. Returns each session's answer record, like smtp_session's.
    """
    args = ["smtp-together", "--mail-from", mail_from]
    for source in sources:
        args += ["--source", source]
    for rcpt in rcpts:
        args += ["--rcpt", rcpt]
    sessions: list[dict[str, Any]] = _client(ct, *args)["sessions"]
    return sessions


def pop3_login(
    ct: Container, source: str, user: str, password: str, tls: str = "none"
) -> dict[str, Any]:
    """POP3 USER/PASS from source; result["ok"] tells whether the login worked.

    tls: "none", "starttls" (STLS on 110) or "implicit" (995); see dovecot_tls().
    """
    return _client(
        ct, "pop3", "--source", source, "--user", user, "--password", password, "--tls", tls
    )


def imap_login(
    ct: Container, source: str, user: str, password: str, tls: str = "none"
) -> dict[str, Any]:
    """IMAP LOGIN from source; result["ok"] tells whether the login worked (tls as pop3_login)."""
    return _client(
        ct, "imap", "--source", source, "--user", user, "--password", password, "--tls", tls
    )


def abort_login(
    ct: Container, protocol: str, source: str, how: str, user: str = "alice", tls: str = "none"
) -> dict[str, Any]:
    """Leave a POP3/IMAP session without logging in; `how` is one of mailclient.ABORTS
    (close, quit, cancel-auth, fail-then-quit with a wrong password, tls-close)."""
    args = ["--protocol", protocol, "--source", source, "--how", how, "--user", user]
    return _client(ct, "abort", *args, "--tls", tls)


PATIENT_SCRIPT = """\
import json, sys
sys.path.insert(0, sys.argv[1])
import mailclient
mailclient.TIMEOUT = float(sys.argv[2])
print(json.dumps(mailclient.smtp_try(sys.argv[3], sys.argv[4:], "sender@client.example.test")))
"""


def smtp_try_patient(
    ct: Container, source: str, rcpts: list[str], timeout: float = 60
) -> list[tuple[int, str, float]]:
    """smtp_try with a client that waits `timeout` seconds for each answer, and each
    RCPT's (code, message, seconds).

    Why: behind a hung policy service Postfix waits its `timeout` per try, twice
    (smtpd_policy_service_try_limit), before its default_action answers: longer
    than mailclient's 15 s, though a real client waits minutes (RFC 5321, 4.5.3.2).
    """
    argv = [HOST_PYTHON, "-c", PATIENT_SCRIPT, str(MAILCLIENT.parent), str(timeout), source]
    proc = ct.netns_run([*argv, *rcpts], check=False, timeout=timeout * (len(rcpts) + 2))
    if proc.returncode != 0:
        raise RuntimeError(f"smtp from {source} to {rcpts} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout)
    return [
        (int(code), str(message), float(seconds))
        for (code, message), seconds in zip(result["rcpts"], result["rcpt_seconds"], strict=True)
    ]


# --------------------------------------------------------------------------
# Postfix variations: SASL through Dovecot, Debian's submission (each undone after)
# --------------------------------------------------------------------------


@contextlib.contextmanager
def postfix_settings(ct: Container, settings: dict[str, str]) -> Iterator[None]:
    """main.cf with `settings` (postconf -e, then a reload); afterwards each setting back
    to the value it had, or removed (postconf -X) where main.cf did not set it."""
    shown = ct.run(["postconf", "-n", *settings]).stdout.splitlines()
    before = dict(line.split(" = ", 1) for line in shown if " = " in line)
    ct.run(["postconf", "-e", *(f"{name}={value}" for name, value in settings.items())])
    ct.run(["postfix", "reload"])
    try:
        yield
    finally:
        kept = [f"{name}={before[name]}" for name in settings if name in before]
        added = [name for name in settings if name not in before]
        if kept:
            ct.run(["postconf", "-e", *kept])
        if added:
            ct.run(["postconf", "-X", *added])
        ct.run(["postfix", "reload"])


SASL_SNIPPET = "/etc/dovecot/conf.d/99-pbs-sasl.conf"
SASL_SOCKET = "/var/spool/postfix/private/auth"
# The form of Debian's commented example in 10-master.conf, the same in 2.3 and 2.4.
SASL_CONF = f"""\
# Written by tests/system/mailhost.py: Postfix's SASL through Dovecot's auth service.
service auth {{
  unix_listener {SASL_SOCKET} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""
SASL_SETTINGS = {
    "smtpd_sasl_type": "dovecot",
    "smtpd_sasl_path": "private/auth",
    "smtpd_sasl_auth_enable": "yes",
}


@contextlib.contextmanager
def postfix_sasl_via_dovecot(ct: Container) -> Iterator[None]:
    """Postfix's smtpd offering AUTH, checked by Dovecot's auth service (USERS' passwords),
    as SASL_README's Dovecot section sets it up; plaintext, as the rest of the host."""
    ct.write_file(SASL_SNIPPET, SASL_CONF)
    reconfigure_dovecot(ct)
    deadline = time.monotonic() + 10
    while ct.run(["test", "-S", SASL_SOCKET], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Dovecot made no {SASL_SOCKET}")
        time.sleep(0.1)
    try:
        with postfix_settings(ct, SASL_SETTINGS):
            yield
    finally:
        ct.run(["rm", "-f", SASL_SNIPPET])
        reconfigure_dovecot(ct)


SUBMISSION_WITHOUT = ("smtpd_tls_security_level", "smtpd_tls_auth_only")
"""Debian's submission overrides left out: they demand TLS, which the test clients do
not speak (swaks has no Net::SSLeay in the rootfs); TLS decides no relay restriction."""


def debian_submission_overrides(master_cf: str) -> list[tuple[str, str]]:
    """The `-o name=value` lines of the commented `submission inet` service in Debian's
    master.cf (its own, per release: trixie's adds smtpd_forbid_unauth_pipelining and more)."""
    lines = master_cf.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"#submission\s+inet\s", line))
    overrides = []
    for line in lines[start + 1 :]:
        option = re.match(r"#\s+-o\s+([a-z_]+)=(\S*)$", line)
        if option:
            overrides.append((option.group(1), option.group(2)))
        elif not line.startswith("#     "):  # the commentary between the options goes on
            break
    return overrides


@contextlib.contextmanager
def debian_submission(ct: Container) -> Iterator[list[tuple[str, str]]]:
    """Submission on 587 as Debian's master.cf has it commented out, with its own `-o`
    overrides (but SUBMISSION_WITHOUT); yields the overrides written. Removed after."""
    written = [
        (name, value)
        for name, value in debian_submission_overrides(ct.read_file("/etc/postfix/master.cf"))
        if name not in SUBMISSION_WITHOUT
    ]
    ct.run(["postconf", "-M", "submission/inet=submission inet n - y - - smtpd"])
    ct.run(["postconf", "-P", *(f"submission/inet/{name}={value}" for name, value in written)])
    ct.run(["postfix", "reload"])
    wait_for_listeners(ct, (587,))
    try:
        yield written
    finally:
        ct.run(["postconf", "-MX", "submission/inet"])
        ct.run(["postfix", "reload"])


# --------------------------------------------------------------------------
# swaks, Debian's SMTP client, run inside the container: many sessions at once
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SwaksSession:
    """One SMTP session up to RCPT: from `source` to SERVER_V4:`port`, every recipient in
    turn, authenticated (AUTH PLAIN) as `user` when one is named."""

    name: str
    source: str
    recipients: tuple[str, ...]
    port: int = 25
    user: str = ""


@dataclass(frozen=True)
class RcptReply:
    """The server's reply to one RCPT, as swaks shows it, and how long it took."""

    recipient: str
    reply: str
    seconds: float


SWAKS_AT_ONCE = r"""
set -u
out=$(mktemp -d)
while IFS='|' read -r name source port user password recipients; do
    set -- --server {server} --port "$port" --local-interface "$source" \
        --from sender@client.example.test --to "$recipients" \
        --quit-after RCPT --show-time-lapse --timeout 120
    if [ -n "$user" ]; then
        set -- "$@" --auth PLAIN --auth-user "$user" --auth-password "$password"
    fi
    swaks "$@" > "$out/$name" 2>&1 &
done
wait
for file in "$out"/*; do
    echo "### session ${file##*/}"
    cat "$file"
done
rm -r "$out"
"""


def swaks_at_once(ct: Container, sessions: list[SwaksSession]) -> dict[str, list[RcptReply]]:
    """Run every session at once (swaks, `--quit-after RCPT`: never DATA), and return each
    one's RCPT replies in order; a session missing a reply raises with its transcript.

    At once, because a session behind an unreachable or hung policy service spends most
    of its time waiting: in parallel those waits cost about one of them.
    """
    specs = "".join(
        f"{s.name}|{s.source}|{s.port}|{s.user}|{USERS.get(s.user, '')}|{','.join(s.recipients)}\n"
        for s in sessions
    )
    script = SWAKS_AT_ONCE.replace("{server}", SERVER_V4)
    slowest = 30 + 10 * max((len(s.recipients) for s in sessions), default=0)
    output = ct.run(["bash", "-c", script], input=specs, timeout=slowest).stdout
    transcripts: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("### session "):
            current = transcripts.setdefault(line.removeprefix("### session "), [])
        else:
            current.append(line)
    return {s.name: rcpt_replies(s, transcripts.get(s.name, [])) for s in sessions}


def rcpt_replies(session: SwaksSession, transcript: list[str]) -> list[RcptReply]:
    """The RCPT replies of one swaks transcript (`--show-time-lapse`), by recipient."""
    replies: list[RcptReply] = []
    asked, seconds = False, 0.0
    for line in transcript:
        if line.startswith(" -> RCPT TO:"):
            asked = True
        elif asked and line.startswith("=== response in "):
            seconds = float(line.removeprefix("=== response in ").rstrip("s"))
        elif asked and line[:4] in ("<-  ", "<** "):
            recipient = session.recipients[len(replies)]
            replies.append(RcptReply(recipient, line[4:].strip(), seconds))
            asked = False
    if len(replies) != len(session.recipients):
        raise RuntimeError(f"swaks session {session.name}:\n" + "\n".join(transcript))
    return replies
