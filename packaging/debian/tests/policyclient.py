"""What the DEP-8 tests share: Postfix's policy request on the installed socket.

Not a test itself (autopkgtest runs only what debian/tests/control names); the
tests import it from their own directory.
"""

import socket
import subprocess
import sys
import time

POLICY_SOCKET = "/var/spool/postfix/private/pbs-policy"


def ask(client_address: str) -> str:
    """Postfix's RCPT request for client_address on the policy socket; the action."""
    request = (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        f"client_address={client_address}\nclient_name=unknown\n"
        "sender=alice@example.test\nrecipient=someone@remote.test\n\n"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(POLICY_SOCKET)
        connection.sendall(request.encode())
        answer = []
        with connection.makefile("rb") as replies:
            for line in replies:  # name=value lines up to an empty one, as Postfix reads
                if line == b"\n":
                    break
                answer.append(line.decode().strip())
    return "\n".join(answer)


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def expect(client_address: str, action: str, within: float = 0) -> None:
    """client_address gets `action`, at once or within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        answer = ask(client_address)
        if answer == f"action={action}":
            print(f"{client_address}: {answer}")
            return
        if time.monotonic() >= deadline:
            sys.exit(f"{client_address}: expected action={action}, got {answer!r}")
        time.sleep(0.2)


def require_active(*units: str) -> None:
    """Stop the test unless each of `units` is active, as installing the package left it."""
    for unit in units:
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
        if state.stdout.strip() != "active":
            sys.exit(f"{unit} is {state.stdout.strip()}")
