"""The Postfix settings we recommend, in one place.

The README, the man page, the demo, `doctor` and the booted-system tests all
take the line from here (the packaging tests check the texts), so what we tell
an administrator is exactly what the tests run against Postfix 3.7 and 3.10.

Why each setting (issues #13 and #22, tests/system/test_faults.py and
test_line_equivalence.py):

- `permit_auth_destination` before our check: mail to a domain this Postfix
  receives for (mydestination, virtual and relay domains) is accepted by the
  relay restrictions without asking us, since our answer could not change
  anything there. Inbound mail, most of a mail server's RCPTs, then starts no
  handler (it cost 0.8-0.9 ms of CPU per message). The recipient restrictions
  (unknown users, `smtpd_reject_unlisted_recipient`) still apply to it. It goes
  directly before our check, after whatever a site has of its own there (client
  access maps, RBLs), never in a list that ends in a bare `reject` (Debian's
  submission services: that would accept unauthenticated mail to local domains).
- `reject_unauth_destination` last, not `reject`: the reply stays `554 5.7.1
  Relay access denied` (which `report` counts), and the list stays safe if an
  administrator later removes `permit_auth_destination`.
- `policy_context=pbs-relay` (Postfix >= 3.1, sent with every request): tells
  the handler that this line asks only about relaying, so a relay attempt that
  finds no authorization may wait, bounded, for a login still on its way from
  the journal (`[policy] login_wait`). Without it (the old line, which also asks
  about inbound mail) nothing ever waits.
- `default_action=DEFER_IF_REJECT`: when the policy service cannot be reached
  (its socket stopped, its handler unable to start, the package removed with
  the line left in place), Postfix's own default answers every RCPT with
  `451 4.3.5 Server configuration problem`. Under DEFER_IF_REJECT only what a
  later restriction would reject is deferred: a relay attempt gets 4xx. A text
  after the action would need the whole option in braces,
  `{ default_action = DEFER_IF_REJECT text }`; unbraced, smtpd stops
  answering at all, so it has none.
- `timeout=10s`: Postfix waits 100 s by default, twice (`try_limit`), for a
  hung (not crashed) handler, on every RCPT. Our answer takes at most
  `[redis] timeout` (1.5 s) plus `[policy] login_wait` (1 s) plus a process
  start, twice that for the server.
- `max_idle=60s`: each smtpd process keeps one policy connection, and so one
  handler process (about 8 MiB), as long as it is used; an smtpd that sat
  idle a minute between sessions reconnects for the price of one start.
"""

from __future__ import annotations

from pbs_activated.answer.decision import RELAY_CONTEXT

POLICY_SOCKET = "private/pbs-policy"
"""The policy socket, relative to Postfix's queue directory (/var/spool/postfix)."""

POLICY_SERVICE = "unix:" + POLICY_SOCKET

POLICY_OPTIONS = (
    ("default_action", "DEFER_IF_REJECT"),
    ("timeout", "10s"),
    ("max_idle", "60s"),
    ("policy_context", RELAY_CONTEXT),
)
"""check_policy_service's per-service settings (Postfix >= 3.1), in the order written."""

PERMITTED_FIRST = ("permit_mynetworks", "permit_sasl_authenticated")
"""What Debian's smtpd_relay_restrictions permits before it refuses to relay."""

LOCAL_DESTINATIONS = "permit_auth_destination"
"""Accepts mail for our own domains before we are asked: only relaying reaches us."""

REFUSAL = "reject_unauth_destination"

LEGACY_OPTIONS = POLICY_OPTIONS[:3]
"""0.2.0's settings, without policy_context: a line that asks about inbound mail too."""


def restriction(
    service: str = POLICY_SERVICE, options: tuple[tuple[str, str], ...] = POLICY_OPTIONS
) -> str:
    """The check_policy_service restriction with our settings, for `service`."""
    written = ", ".join(f"{name}={value}" for name, value in options)
    return f"check_policy_service {{ {service}, {written} }}"


def relay_restrictions(service: str = POLICY_SERVICE) -> str:
    """The value of smtpd_relay_restrictions we recommend, on one line."""
    return ", ".join([*PERMITTED_FIRST, LOCAL_DESTINATIONS, restriction(service), REFUSAL])


def legacy_relay_restrictions(service: str = POLICY_SERVICE) -> str:
    """0.2.0's recommended line, which every upgraded site still has until it changes it."""
    return ", ".join([*PERMITTED_FIRST, restriction(service, LEGACY_OPTIONS), REFUSAL])


def main_cf(service: str = POLICY_SERVICE) -> str:
    """The main.cf setting as the README shows it, folded as Postfix allows."""
    return (
        f"smtpd_relay_restrictions = {', '.join(PERMITTED_FIRST)},\n"
        f"    {LOCAL_DESTINATIONS},\n"
        f"    {restriction(service)},\n"
        f"    {REFUSAL}"
    )
