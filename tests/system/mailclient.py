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
    python3 mailclient.py imap --source 2001:db8::10 --user alice --password secret
"""

from __future__ import annotations

import argparse
import imaplib
import json
import poplib
import smtplib
import socket
import sys
import time
from typing import Any

SERVER_V4 = "192.0.2.1"
SERVER_V6 = "2001:db8::1"
TIMEOUT = 15.0


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
        return socket.create_connection(
            (self.host, self.port), timeout=timeout, source_address=(self._source, 0)
        )


def pop3_login(
    source: str, user: str, password: str, server: str | None = None, port: int = 110
) -> dict[str, Any]:
    """USER/PASS login; report success or the server's error."""
    pop = _SourcePOP3(server or server_for(source), port, source)
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
        return socket.create_connection(
            (self.host, self.port), timeout=timeout, source_address=(self._source, 0)
        )


def imap_login(
    source: str, user: str, password: str, server: str | None = None, port: int = 143
) -> dict[str, Any]:
    """LOGIN; report success or the server's error."""
    imap = _SourceIMAP4(server or server_for(source), port, source)
    result: dict[str, Any] = {"welcome": _text(imap.welcome)}
    try:
        # imaplib quotes the password but sends the user name as an atom; a name
        # with spaces or commas (the injection tests) must be a quoted string.
        quoted = user if user.replace(".", "").replace("@", "").isalnum() else imap._quote(user)
        typ, data = imap.login(quoted, password)
        result["ok"] = typ == "OK"
        result["response"] = _text(data[0])
        imap.logout()
    except imaplib.IMAP4.error as exc:
        result["ok"] = False
        result["error"] = str(exc)
        imap.shutdown()
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
    for name, port in (("pop3", 110), ("imap", 143)):
        login = sub.add_parser(name)
        login.add_argument("--source", required=True)
        login.add_argument("--server")
        login.add_argument("--port", type=int, default=port)
        login.add_argument("--user", required=True)
        login.add_argument("--password", required=True)
    args = parser.parse_args(argv)
    if args.command == "smtp":
        result = smtp_try(
            args.source, args.rcpt, args.mail_from, args.server, args.port, args.send_data
        )
    elif args.command == "smtp-together":
        result = smtp_together(args.source, args.rcpt, args.mail_from, args.server, args.port)
    elif args.command == "pop3":
        result = pop3_login(args.source, args.user, args.password, args.server, args.port)
    else:
        result = imap_login(args.source, args.user, args.password, args.server, args.port)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
