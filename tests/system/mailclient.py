"""Mail protocol clients for system tests, run inside a container's network namespace.

Why a separate script: the container has a private network (only ``lo``), so a
test client must run in that network namespace.  ``mailhost.py`` starts this
file with the host's /usr/bin/python3 under ``nsenter -t PID -n``; it binds the
requested *source* address (one of the test client addresses on the
container's lo), talks to Postfix/Dovecot and prints one JSON object to stdout.
Being stdlib-only and file-system independent, it needs nothing installed in
the container.

Usage (normally via mailhost.py)::

    python3 mailclient.py smtp --source 192.0.2.11 --rcpt someone@remote.test
    python3 mailclient.py smtp-together --source 192.0.2.11 --source 192.0.2.12 --rcpt x@remote.test
    python3 mailclient.py pop3 --source 192.0.2.10 --user alice --password secret
    python3 mailclient.py imap --source 2001:db8::10 --user alice --password secret --tls starttls
    python3 mailclient.py abort --protocol imap --source 192.0.2.30 --how cancel-auth

TLS (``--tls starttls``: STLS / STARTTLS on 110 / 143; ``--tls implicit``: 995 /
993) accepts any certificate: the server's is a throwaway self-signed one, and
what the tests look at is what Dovecot logs, not who it is.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import sys
import time
from typing import Any

SERVER_V4 = "192.0.2.1"
SERVER_V6 = "2001:db8::1"
TIMEOUT = 15.0
TLS_MODES = ("none", "starttls", "implicit")
IMPLICIT_TLS_PORTS = {"pop3": 995, "imap": 993}
PLAIN_PORTS = {"pop3": 110, "imap": 143}
ABORTS = ("close", "quit", "cancel-auth", "fail-then-quit", "tls-close")
"""How abort_login leaves: close the connection after the greeting; QUIT/LOGOUT
without authenticating; start AUTHENTICATE PLAIN and cancel it with `*`; fail a
login and then QUIT/LOGOUT; or close during the TLS handshake on the TLS port."""


def tls_context() -> ssl.SSLContext:
    """A client context that accepts the test server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect_from(source: str, server: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to server:port whose source address is `source`."""
    return socket.create_connection((server, port), timeout=timeout, source_address=(source, 0))


def server_for(source: str) -> str:
    """The server address of the same family as the client's source address."""
    return SERVER_V6 if ":" in source else SERVER_V4


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def smtp_try(
    source: str,
    rcpts: list[str],
    mail_from: str,
    server: str | None = None,
    port: int = 25,
    send_data: bool = False,
) -> dict[str, Any]:
    """Run EHLO / MAIL FROM / RCPT TO (one per recipient) and report every answer.

    With send_data the message is also sent when at least one RCPT succeeded,
    so a test can follow the mail into the queue or a mailbox.
    """
    result: dict[str, Any] = {"rcpts": []}
    with smtplib.SMTP(timeout=TIMEOUT, source_address=(source, 0)) as smtp:
        code, msg = smtp.connect(server or server_for(source), port)
        result["connect"] = [code, _text(msg)]
        code, msg = smtp.ehlo("client.example.test")
        result["ehlo"] = [code, _text(msg)]
        code, msg = smtp.mail(mail_from)
        result["mail"] = [code, _text(msg)]
        # Seconds from sending each RCPT to its answer: Postfix asks the policy
        # service in between, so this is what a slow handler would cost a client.
        result["rcpt_seconds"] = []
        for rcpt in rcpts:
            started = time.monotonic()
            code, msg = smtp.rcpt(rcpt)
            result["rcpt_seconds"].append(time.monotonic() - started)
            result["rcpts"].append([code, _text(msg)])
        accepted = [r for r, (code, _) in zip(rcpts, result["rcpts"], strict=True) if code < 300]
        if send_data and accepted:
            body = (
                f"From: <{mail_from}>\r\nTo: <{accepted[0]}>\r\n"
                "Subject: pbs-activated system test\r\n\r\nhello\r\n"
            )
            code, msg = smtp.data(body)
            result["data"] = [code, _text(msg)]
        else:
            smtp.rset()
    return result


def smtp_together(
    sources: list[str],
    rcpts: list[str],
    mail_from: str,
    server: str | None = None,
    port: int = 25,
) -> dict[str, Any]:
    """One SMTP session per source, all open at once, their RCPTs taken in turns.

    Every session has said EHLO and MAIL FROM before the first RCPT, and every
    recipient is asked of each session before the next: Postfix serves each with
    an smtpd process of its own, so its policy connections are open at the same time.
    """
    sessions: list[smtplib.SMTP] = []
    results: list[dict[str, Any]] = []
    try:
        for source in sources:
            smtp = smtplib.SMTP(timeout=TIMEOUT, source_address=(source, 0))
            sessions.append(smtp)
            result: dict[str, Any] = {"source": source, "rcpts": []}
            results.append(result)
            code, msg = smtp.connect(server or server_for(source), port)
            result["connect"] = [code, _text(msg)]
            code, msg = smtp.ehlo("client.example.test")
            result["ehlo"] = [code, _text(msg)]
            code, msg = smtp.mail(mail_from)
            result["mail"] = [code, _text(msg)]
        for rcpt in rcpts:
            for smtp, result in zip(sessions, results, strict=True):
                code, msg = smtp.rcpt(rcpt)
                result["rcpts"].append([code, _text(msg)])
        for smtp in sessions:
            smtp.rset()
            smtp.quit()
    finally:
        for smtp in sessions:
            smtp.close()
    return {"sessions": results}


class _SourcePOP3(poplib.POP3):
    """POP3 that connects from a chosen source address (poplib has no option)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float) -> socket.socket:
        return connect_from(self._source, self.host, self.port, timeout)


class _SourcePOP3_SSL(poplib.POP3_SSL):  # noqa: N801 - poplib's spelling
    """POP3 over TLS from the start (port 995), from a chosen source address."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=TIMEOUT, context=tls_context())

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = connect_from(self._source, self.host, self.port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def pop3_connect(source: str, tls: str, server: str | None, port: int | None) -> poplib.POP3:
    """A POP3 session from source, in the TLS mode asked for (STLS done already)."""
    host = server or server_for(source)
    if tls == "implicit":
        return _SourcePOP3_SSL(host, port or IMPLICIT_TLS_PORTS["pop3"], source)
    pop = _SourcePOP3(host, port or PLAIN_PORTS["pop3"], source)
    if tls == "starttls":
        pop.stls(tls_context())
    return pop


def pop3_login(
    source: str,
    user: str,
    password: str,
    server: str | None = None,
    port: int | None = None,
    tls: str = "none",
) -> dict[str, Any]:
    """USER/PASS login; report success or the server's error."""
    pop = pop3_connect(source, tls, server, port)
    result: dict[str, Any] = {"welcome": _text(pop.getwelcome())}
    try:
        pop.user(user)
        pop.pass_(password)
        result["ok"] = True
        result["stat"] = list(pop.stat())
        pop.quit()
    except poplib.error_proto as exc:
        result["ok"] = False
        result["error"] = _text(exc.args[0])
        pop.close()
    return result


class _SourceIMAP4(imaplib.IMAP4):
    """IMAP4 that connects from a chosen source address (imaplib has no option)."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return connect_from(self._source, self.host, self.port, timeout or TIMEOUT)


class _SourceIMAP4_SSL(imaplib.IMAP4_SSL):  # noqa: N801 - imaplib's spelling
    """IMAP over TLS from the start (port 993), from a chosen source address."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self._source = source
        super().__init__(host, port, timeout=TIMEOUT, ssl_context=tls_context())

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = connect_from(self._source, self.host, self.port, timeout or TIMEOUT)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_connect(source: str, tls: str, server: str | None, port: int | None) -> imaplib.IMAP4:
    """An IMAP session from source, in the TLS mode asked for (STARTTLS done already)."""
    host = server or server_for(source)
    if tls == "implicit":
        return _SourceIMAP4_SSL(host, port or IMPLICIT_TLS_PORTS["imap"], source)
    imap = _SourceIMAP4(host, port or PLAIN_PORTS["imap"], source)
    if tls == "starttls":
        imap.starttls(tls_context())
    return imap


def imap_user(imap: imaplib.IMAP4, user: str) -> str:
    """The user name as LOGIN must send it.

    imaplib quotes the password but sends the user name as an atom; a name with
    spaces or commas (the injection tests) must be a quoted string.
    """
    return user if user.replace(".", "").replace("@", "").isalnum() else imap._quote(user)


def imap_login(
    source: str,
    user: str,
    password: str,
    server: str | None = None,
    port: int | None = None,
    tls: str = "none",
) -> dict[str, Any]:
    """LOGIN; report success or the server's error."""
    imap = imap_connect(source, tls, server, port)
    result: dict[str, Any] = {"welcome": _text(imap.welcome)}
    try:
        typ, data = imap.login(imap_user(imap, user), password)
        result["ok"] = typ == "OK"
        result["response"] = _text(data[0])
        imap.logout()
    except imaplib.IMAP4.error as exc:
        result["ok"] = False
        result["error"] = str(exc)
        imap.shutdown()
    return result


def abort_login(
    protocol: str,
    source: str,
    how: str,
    user: str = "alice",
    password: str = "wrong",
    server: str | None = None,
    tls: str = "none",
) -> dict[str, Any]:
    """Leave a POP3/IMAP session without logging in, in one of the ABORTS ways.

    Each way makes Dovecot log a different "no login" line (aborted, disconnected,
    auth failed); none of them may ever authorize the client.
    """
    host = server or server_for(source)
    if how == "tls-close":
        # A TCP connection to the TLS port that closes before the handshake ends.
        with connect_from(source, host, IMPLICIT_TLS_PORTS[protocol], TIMEOUT) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a truncated ClientHello
        return {"ok": False, "how": how}
    if how == "close":
        with connect_from(source, host, PLAIN_PORTS[protocol], TIMEOUT) as sock:
            greeting = sock.recv(512)
        return {"ok": False, "how": how, "welcome": _text(greeting).strip()}
    if protocol == "pop3":
        return _abort_pop3(pop3_connect(source, tls, server, None), how, user, password)
    return _abort_imap(imap_connect(source, tls, server, None), how, user, password)


def _abort_pop3(pop: poplib.POP3, how: str, user: str, password: str) -> dict[str, Any]:
    """The POP3 side of abort_login (the session is open, greeting read)."""
    result: dict[str, Any] = {"ok": False, "how": how, "welcome": _text(pop.getwelcome())}
    if how == "cancel-auth":
        result["auth"] = _text(pop._shortcmd("AUTH PLAIN"))  # "+ "
        try:
            pop._shortcmd("*")
        except poplib.error_proto as exc:
            result["cancel"] = _text(exc.args[0])
    elif how == "fail-then-quit":
        pop.user(user)
        try:
            pop.pass_(password)
            result["ok"] = True  # the caller asked for a failure: say it did not happen
        except poplib.error_proto as exc:
            result["error"] = _text(exc.args[0])
    result["quit"] = _text(pop.quit())
    return result


def _abort_imap(imap: imaplib.IMAP4, how: str, user: str, password: str) -> dict[str, Any]:
    """The IMAP side of abort_login (the session is open, greeting read)."""
    result: dict[str, Any] = {"ok": False, "how": how, "welcome": _text(imap.welcome)}
    if how == "cancel-auth":
        tag = imap._new_tag()
        imap.send(tag + b" AUTHENTICATE PLAIN\r\n")
        result["auth"] = _text(imap.readline()).strip()  # "+ "
        imap.send(b"*\r\n")
        result["cancel"] = _text(imap.readline()).strip()  # "<tag> BAD Authentication aborted"
    elif how == "fail-then-quit":
        try:
            imap.login(imap_user(imap, user), password)
            result["ok"] = True
        except imaplib.IMAP4.error as exc:
            result["error"] = str(exc)
    typ, data = imap.logout()
    result["logout"] = [typ, _text(data[0]) if data and data[0] else ""]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    smtp = sub.add_parser("smtp")
    smtp.add_argument("--source", required=True)
    smtp.add_argument("--server")
    smtp.add_argument("--port", type=int, default=25)
    smtp.add_argument("--mail-from", default="sender@client.example.test")
    smtp.add_argument("--rcpt", action="append", required=True)
    smtp.add_argument("--send-data", action="store_true")
    together = sub.add_parser("smtp-together")
    together.add_argument("--source", action="append", required=True)
    together.add_argument("--server")
    together.add_argument("--port", type=int, default=25)
    together.add_argument("--mail-from", default="sender@client.example.test")
    together.add_argument("--rcpt", action="append", required=True)
    for name in ("pop3", "imap"):
        login = sub.add_parser(name)
        login.add_argument("--source", required=True)
        login.add_argument("--server")
        login.add_argument("--port", type=int, help="default: by protocol and --tls")
        login.add_argument("--user", required=True)
        login.add_argument("--password", required=True)
        login.add_argument("--tls", choices=TLS_MODES, default="none")
    abort = sub.add_parser("abort")
    abort.add_argument("--protocol", choices=("pop3", "imap"), required=True)
    abort.add_argument("--source", required=True)
    abort.add_argument("--server")
    abort.add_argument("--how", choices=ABORTS, required=True)
    abort.add_argument("--user", default="alice")
    abort.add_argument("--password", default="wrong")
    abort.add_argument("--tls", choices=TLS_MODES, default="none")
    args = parser.parse_args(argv)
    if args.command == "smtp":
        result = smtp_try(
            args.source, args.rcpt, args.mail_from, args.server, args.port, args.send_data
        )
    elif args.command == "smtp-together":
        result = smtp_together(args.source, args.rcpt, args.mail_from, args.server, args.port)
    elif args.command == "pop3":
        result = pop3_login(args.source, args.user, args.password, args.server, args.port, args.tls)
    elif args.command == "imap":
        result = imap_login(args.source, args.user, args.password, args.server, args.port, args.tls)
    else:
        result = abort_login(
            args.protocol, args.source, args.how, args.user, args.password, args.server, args.tls
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
