"""The Postfix settings we recommend, in one place.

The README, the man page, the demo, `doctor` and the booted-system tests all
take the line from here (the packaging tests check the texts), so what we tell
an administrator is exactly what the tests run against Postfix 3.7 and 3.10.

Why each setting (issue #13, and tests/system/test_faults.py):

- `default_action=DEFER_IF_REJECT`: when the policy service cannot be reached
  (its socket stopped, its handler unable to start, the package removed with
  the line left in place), Postfix's own default answers every RCPT with
  `451 4.3.5 Server configuration problem`, local mail included. Under
  DEFER_IF_REJECT only what a later restriction would reject is deferred: a
  relay attempt gets 4xx and local mail is decided by the other restrictions.
  A text after the action would need the whole option in braces,
  `{ default_action = DEFER_IF_REJECT text }`; unbraced, smtpd stops
  answering at all, so it has none.
- `timeout=10s`: Postfix waits 100 s by default, twice (`try_limit`), for a
  hung (not crashed) handler, on every RCPT. Our answer takes at most
  `[redis] timeout` (1.5 s) plus a process start, twice that for the server.
- `max_idle=60s`: each smtpd process keeps one policy connection, and so one
  handler process (about 8 MiB), as long as it is used; an smtpd that sat
  idle a minute between sessions reconnects for the price of one start.
"""

from __future__ import annotations

POLICY_SOCKET = "private/pbs-policy"
"""The policy socket, relative to Postfix's queue directory (/var/spool/postfix)."""

POLICY_SERVICE = "unix:" + POLICY_SOCKET

POLICY_OPTIONS = (("default_action", "DEFER_IF_REJECT"), ("timeout", "10s"), ("max_idle", "60s"))
"""check_policy_service's per-service settings (Postfix >= 3.0), in the order written."""

PERMITTED_FIRST = ("permit_mynetworks", "permit_sasl_authenticated")
"""What Debian's smtpd_relay_restrictions permits before it refuses to relay."""

REFUSAL = "reject_unauth_destination"


def restriction(service: str = POLICY_SERVICE) -> str:
    """The check_policy_service restriction with our settings, for `service`."""
    options = ", ".join(f"{name}={value}" for name, value in POLICY_OPTIONS)
    return f"check_policy_service {{ {service}, {options} }}"


def relay_restrictions(service: str = POLICY_SERVICE) -> str:
    """The value of smtpd_relay_restrictions we recommend, on one line."""
    return ", ".join([*PERMITTED_FIRST, restriction(service), REFUSAL])


def main_cf(service: str = POLICY_SERVICE) -> str:
    """The main.cf setting as the README shows it, folded as Postfix allows."""
    return (
        f"smtpd_relay_restrictions = {', '.join(PERMITTED_FIRST)},\n"
        f"    {restriction(service)},\n"
        f"    {REFUSAL}"
    )
