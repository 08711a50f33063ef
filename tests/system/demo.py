"""`make demo`: pbs-activated at work in a throwaway Debian, narrated for a newcomer.

Why a demo and not just the tests: the tests prove the product, but a newcomer
wants to *see* it: the package installed the way an admin installs it, a mail
client logging in over POP3, Postfix relaying for it and refusing a stranger, and
the journal entries that record both. Every command shown is really run in the
container and its real output printed; the container is deleted at the end.

    /usr/bin/python3 tests/system/demo.py [--release bookworm]   # as root
    make demo                  # Debian 13 "trixie", today's stable
    make demo RELEASE=bookworm # Debian 12
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# Run as a script from the checkout: its package (pbs_activated.admin.postfix) comes from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from container import (  # noqa: E402
    CACHE_DIR,
    Container,
    ContainerError,
    Target,
    missing_requirements,
    rootfs_path,
    target_named,
)
from mailhost import (  # noqa: E402
    USERS,
    configure_mail_host,
    login_verb,
    pop3_login,
    smtp_try,
)
from product import BuildFailed, build_deb, install_product, wait_authorized  # noqa: E402

from pbs_activated.admin import postfix  # noqa: E402

LOGGED_IN = "192.0.2.10"
STRANGER = "192.0.2.11"
REMOTE = "someone@remote.test"
LOCAL = "alice@example.test"
AUDIT_FIELDS = (
    "PBS_EVENT,PBS_ACTION,PBS_USER,PBS_CLIENT_ADDRESS,PBS_RECIPIENT,PBS_SENDER,PBS_EXPIRES"
)
WIDTH = 78
RELEASES = ("trixie", "bookworm")
"""The first is the default: today's stable."""


def heading(step: str) -> None:
    print(f"\n== {step} " + "=" * max(0, WIDTH - len(step) - 4), flush=True)


def say(text: str) -> None:
    """A short explanation, wrapped."""
    print(textwrap.fill(" ".join(text.split()), WIDTH), flush=True)


def output(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"    {line}")
    sys.stdout.flush()


def show(ct: Container, command: str, keep: str | None = None) -> str:
    """Run a shell command in the container, print it and its real output.

    keep: print only the output lines containing this (apt is chatty).
    """
    print(f"  root@mx:~# {command}", flush=True)
    result = ct.run(command, check=False, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    text = result.stdout + result.stderr
    if keep is not None:
        text = "\n".join(line for line in text.splitlines() if keep in line)
    output(text)
    return result.stdout


def client(action: str) -> None:
    print(f"  client$ {action}", flush=True)


def prepare(ct: Container) -> None:
    heading("1. A mail host")
    debian = ct.read_file("/etc/debian_version").strip()
    say(
        f"""The container runs Debian {debian} ({ct.target.release}) with its Postfix,
        Dovecot (POP3, IMAP) and Redis, and systemd as PID 1. The users are alice
        and bob. Mail clients connect from
        {LOGGED_IN} and {STRANGER}, addresses on the container's loopback that are
        not in Postfix's mynetworks: without a login, they may not relay."""
    )
    configure_mail_host(ct)
    show(ct, "postconf mail_version mynetworks smtpd_relay_restrictions; dovecot --version")


def install(ct: Container, deb: Path) -> None:
    heading("2. Install the package")
    say(
        """apt installs it like any .deb; its dependencies (python3-redis,
        python3-systemd, and redis-tools or valkey-tools for the server binary)
        are already there. Installing enables and starts the package's own store,
        the policy socket and the journal reader."""
    )
    print(f"  root@mx:~# apt install ./{deb.name}", flush=True)
    started = time.monotonic()
    apt_output = install_product(ct, deb)
    output(
        "\n".join(
            line for line in apt_output.splitlines() if "Setting up" in line or "symlink" in line
        )
    )
    print(f"    ({time.monotonic() - started:.1f} s)")
    show(ct, "systemctl is-active pbs-store.service pbs-policy.socket pbs-journal.service")
    say(
        """One setting in Postfix's main.cf makes smtpd ask the policy service
        before it refuses to relay:"""
    )
    restrictions = postfix.relay_restrictions()
    show(ct, f"postconf -e 'smtpd_relay_restrictions = {restrictions}' && postfix reload")


def login_and_relay(ct: Container) -> None:
    heading(f"3. alice fetches her mail over POP3 from {LOGGED_IN}")
    client(f"POP3 to 192.0.2.1:110 from {LOGGED_IN}: USER alice, PASS ******")
    result = pop3_login(ct, LOGGED_IN, "alice", USERS["alice"])
    output(f"{result['welcome']}\nlogged in: {result['ok']}, messages: {result['stat'][0]}")
    say(
        """Dovecot logs the login to the journal. pbs-journal.service trusts it only
        because journald says it came from dovecot.service, and stores the address
        in the package's store for 30 minutes:"""
    )
    wait_authorized(ct, LOGGED_IN)
    verb = login_verb(ct)
    show(ct, f"journalctl -u dovecot --grep '{verb}: user=<alice>.*rip={LOGGED_IN},' -o cat")
    show(ct, "pbs-activated list")

    heading(f"4. A relay from {LOGGED_IN} is accepted")
    client(f"SMTP from {LOGGED_IN}: MAIL FROM:<alice@example.test>  RCPT TO:<{REMOTE}>")
    [(code, message)] = smtp_try(ct, LOGGED_IN, [REMOTE], mail_from="alice@example.test")
    output(f"{code} {message}")

    heading(f"5. A relay from {STRANGER}, which logged in nowhere, is refused")
    client(f"SMTP from {STRANGER}: RCPT TO:<{REMOTE}>, then RCPT TO:<{LOCAL}>")
    answers = smtp_try(ct, STRANGER, [REMOTE, LOCAL])
    output("\n".join(f"{code} {message}" for code, message in answers))
    say(
        """The policy service answered DUNNO, so Postfix's reject_unauth_destination
        refused the relay; mail for a local user still arrives. An admin can ask
        what the policy service would answer:"""
    )
    show(ct, f"pbs-activated check {STRANGER}")


def local_user_refused(ct: Container) -> None:
    heading(f"6. A local user tries to authorize {STRANGER} and cannot")
    say(
        """A shell account, a webmail running as www-data or a compromised daemon
        must not make Postfix relay. Here `nobody` tries the command line, the
        store's socket and the administrators' socket:"""
    )
    for command in (
        f"runuser -u nobody -- pbs-activated grant {STRANGER}",
        "runuser -u nobody -- pbs-activated list",
        "runuser -u nobody -- python3 -c 'import socket; "
        'socket.socket(socket.AF_UNIX).connect("/run/pbs-store/store.sock")\' 2>&1 | tail -1',
        "runuser -u nobody -- python3 -c 'import socket; "
        'socket.socket(socket.AF_UNIX).connect("/run/pbs-store-admin.sock")\' 2>&1 | tail -1',
    ):
        show(ct, command)
    say(
        """The store has no TCP listener, its socket is in a directory only the
        services' group may enter, and each service logs in as its own ACL user.
        Postfix still refuses the relay:"""
    )
    client(f"SMTP from {STRANGER}: RCPT TO:<{REMOTE}>")
    output("\n".join(f"{code} {message}" for code, message in smtp_try(ct, STRANGER, [REMOTE])))


def audit(ct: Container) -> None:
    heading("7. The audit trail in the journal")
    say(
        """Every login taken and every decision made is a journal entry with PBS_*
        fields, so journalctl answers an auditor's questions. The login taken:"""
    )
    ct.run(["journalctl", "--sync"], check=False)
    fields = f"MESSAGE,_SYSTEMD_UNIT,{AUDIT_FIELDS}"
    show(ct, f"journalctl PBS_EVENT=login -o verbose --output-fields={fields}")
    say("""The two decisions, the relay accepted and the one refused:""")
    show(
        ct,
        f"journalctl PBS_RECIPIENT={REMOTE} -o verbose --output-fields={fields}",
    )
    say(
        """Or briefly, everything pbs-activated logged. Postfix asks at every RCPT:
        the second DUNNO is for the local recipient, which reject_unauth_destination
        then lets through."""
    )
    show(ct, "journalctl -t pbs-activated -o short --no-hostname")


def doctor_and_report(ct: Container) -> None:
    heading("8. The whole chain checked, and the day summed up")
    say(
        """pbs-activated doctor checks what a relay decision depends on, here: the
        Postfix line, the units, the mail server's log lines against our parsers,
        journald, the store and the clock. One line per check, the fix for any
        that is not ok, and the monitoring-plugin exit status (0: all ok)."""
    )
    show(ct, 'pbs-activated doctor; echo "exit status $?"')
    say(
        """pbs-activated report sums the journal up for an auditor: per user and per
        address the logins taken, relays allowed, relays Postfix refused, answers
        while the store was away, and the busiest hours."""
    )
    show(ct, "pbs-activated report --since today")


def parse_arguments(argv: list[str] | None) -> tuple[Target, Path | None]:
    """The release to boot (--release, default trixie, with Redis), and a .deb to
    show instead of building the working tree's (--deb)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", choices=RELEASES, default=RELEASES[0])
    parser.add_argument("--deb", type=Path, help="this package instead of `make deb`'s")
    args = parser.parse_args(argv)
    return target_named(f"{args.release}+redis"), args.deb


def main(argv: list[str] | None = None) -> int:
    target, given_deb = parse_arguments(argv)
    reason = missing_requirements()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    print(f"pbs-activated demo: POP-before-SMTP in a throwaway Debian {target.release} container")
    heading("0. Build the package and boot the container")
    print("  $ make deb    # the first time, apt installs Debian's build tools", flush=True)
    try:
        deb = given_deb.resolve() if given_deb else build_deb()
    except BuildFailed as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    output(f"{deb if given_deb else 'dist/' + deb.name} (rebuilt only when a source file changed)")
    if not rootfs_path(target).is_dir():
        say(
            f"""First run: building a Debian {target.release} root file system with
            debootstrap, Postfix, Dovecot and Redis into {CACHE_DIR}. This downloads
            from deb.debian.org and may take a minute or two; later runs reuse it."""
        )
    started = time.monotonic()
    try:
        with Container(target) as ct:
            say(
                f"""Container booted with systemd-nspawn (systemd as PID 1, a private
                network), ready after {time.monotonic() - started:.1f} s."""
            )
            prepare(ct)
            install(ct, deb)
            login_and_relay(ct)
            local_user_refused(ct)
            audit(ct)
            doctor_and_report(ct)
            heading("9. Clean up")
            say("Powering the container off and deleting its files.")
    except (ContainerError, TimeoutError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"demo failed (the container is removed): {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the container is removed", file=sys.stderr)
        return 130
    say(
        """Done. Next: `make test` runs every test, including this scenario and the
        attacks on it in a booted Debian. README.md shows the setup on a real server."""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
