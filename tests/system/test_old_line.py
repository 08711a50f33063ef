"""A site that keeps 0.2.0's Postfix line after the upgrade (issue #22).

An upgrade does not touch main.cf, so every upgraded site asks the policy
service with the old line (postfix.legacy_relay_restrictions) until its
administrator changes it. It must keep working as before: a login then a relay
gets 250, a stranger 554, and nothing ever waits for a login on its way (that
wait is only for the new line, which marks itself policy_context=pbs-relay: the
old one asks about inbound mail too). `pbs-activated doctor` names it
(postfix.legacy, a warning: exit 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from container import Container
from mailhost import USERS, SwaksSession, enable_policy_service, pop3_login, swaks_at_once
from product import AddressPool, wait_authorized
from test_doctor import LAST_FINDINGS, doctor, not_ok

from pbs_activated.admin import postfix
from pbs_activated.config import defaults

pytestmark = pytest.mark.system

REMOTE = "someone@remote.test"
LOCAL = "bob@example.test"
NO_WAIT = 0.5
"""Seconds within which a stranger's RCPT is answered under the old line: well under
[policy] login_wait, which the new line may spend."""


@contextlib.contextmanager
def old_line(ct: Container) -> Iterator[None]:
    ct.run(["postconf", "-e", f"smtpd_relay_restrictions={postfix.legacy_relay_restrictions()}"])
    ct.run(["postfix", "reload"])
    try:
        yield
    finally:
        enable_policy_service(ct)


def test_the_old_line_relays_as_before_never_waits_and_doctor_names_it(
    product_host: Container, addresses: AddressPool
) -> None:
    ct = product_host
    client, stranger, newcomer = addresses.v4(), addresses.v4(), addresses.v4()
    with old_line(ct):
        assert pop3_login(ct, client, "alice", USERS["alice"])["ok"]
        wait_authorized(ct, client)
        replies = swaks_at_once(
            ct,
            [
                SwaksSession("client", client, (REMOTE,)),
                SwaksSession("stranger", stranger, (REMOTE, LOCAL, REMOTE)),
            ],
        )
        status, statuses = doctor(ct)
    [relayed] = replies["client"]
    first, local, again = replies["stranger"]
    print(f"\nold line: stranger's RCPTs answered in {[r.seconds for r in replies['stranger']]} s")
    assert relayed.reply.startswith("250 "), relayed
    assert first.reply.startswith("554 5.7.1 ") and again.reply.startswith("554 5.7.1 ")
    assert local.reply.startswith("250 "), local
    assert all(reply.seconds < NO_WAIT for reply in replies["stranger"]), replies["stranger"]
    assert not_ok(statuses) == {"postfix.legacy": "warning"}, LAST_FINDINGS
    assert status == 1
    assert doctor(ct)[1].get("postfix.legacy", "ok") == "ok"  # the new line: no such finding

    # The new line, for contrast: the stranger's first relay waits for a login on its way.
    [waited] = swaks_at_once(ct, [SwaksSession("newcomer", newcomer, (REMOTE,))])["newcomer"]
    assert waited.reply.startswith("554 5.7.1 ") and waited.seconds >= defaults.LOGIN_WAIT, waited
