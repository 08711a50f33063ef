"""The bounded wait for a login on its way (loginwait.py) and when a request may wait."""

from __future__ import annotations

import time

import pytest

from pbs_activated.answer import Request, loginwait, service
from pbs_activated.answer.decision import RELAY_CONTEXT, awaits_login, decide
from pbs_activated.config import PolicySettings
from pbs_activated.store import StoreUnavailable


def rcpt(address: str = "192.0.2.10", context: str = RELAY_CONTEXT) -> Request:
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": address,
    }
    if context:
        attributes["policy_context"] = context
    return Request(attributes)


def test_looks_start_soon_grow_and_end_exactly_at_the_limit() -> None:
    offsets = list(loginwait.looks(1.0))
    assert offsets[0] == pytest.approx(0.005)
    assert offsets[-1] == 1.0
    gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    assert max(gaps) <= loginwait.LONGEST_GAP + 1e-9
    assert offsets == sorted(offsets)


def test_no_looks_without_a_limit() -> None:
    assert list(loginwait.looks(0)) == []


def test_only_a_refusal_under_the_relay_context_awaits_a_login() -> None:
    policy = PolicySettings()
    assert awaits_login(rcpt(), decide(rcpt(), policy, lambda a: None))
    assert not awaits_login(rcpt(context=""), decide(rcpt(context=""), policy, lambda a: None))
    assert not awaits_login(rcpt(context="other"), decide(rcpt(), policy, lambda a: None))
    assert not awaits_login(rcpt(), decide(rcpt(), policy, lambda a: "alice"))


def test_a_store_failure_awaits_nothing() -> None:
    def failing(address: str) -> str | None:
        raise StoreUnavailable("down")

    assert not awaits_login(rcpt(), decide(rcpt(), PolicySettings(), failing))


def test_answer_stops_before_the_request_that_awaits_and_each_address_waits_once() -> None:
    policy = PolicySettings()
    requests = [rcpt("192.0.2.10"), rcpt("192.0.2.11"), rcpt("192.0.2.11")]
    known = {"192.0.2.10": "alice"}
    waited: dict[str, int | None] = {}
    replies, decisions, awaited = service.answer(requests, policy, known.get, waited)
    assert (replies, awaited, len(decisions)) == (b"action=OK\n\n", "192.0.2.11", 1)
    waited["192.0.2.11"] = 250
    replies, decisions, awaited = service.answer(requests[1:], policy, known.get, waited)
    assert awaited is None
    assert replies == b"action=DUNNO\n\n" * 2
    assert [d.waited_ms for d in decisions] == [250, None]


def test_the_old_line_never_waits() -> None:
    requests = [rcpt(context="")]
    replies, _, awaited = service.answer(requests, PolicySettings(), lambda a: None, {})
    assert (replies, awaited) == (b"action=DUNNO\n\n", None)


def test_login_wait_zero_never_waits() -> None:
    policy = PolicySettings()
    policy.login_wait = 0.0
    _, _, awaited = service.answer([rcpt()], policy, lambda a: None, {})
    assert awaited is None


def test_wait_for_returns_as_soon_as_the_login_arrives(tmp_path) -> None:
    arrives = time.monotonic() + 0.03
    waited = loginwait.wait_for(
        "192.0.2.10",
        lambda a: "alice" if time.monotonic() >= arrives else None,
        1.0,
        str(tmp_path / "no-reader"),
    )
    assert 30 <= waited < 150


def test_wait_for_gives_up_at_the_limit(tmp_path) -> None:
    waited = loginwait.wait_for("192.0.2.10", lambda a: None, 0.2, str(tmp_path / "none"))
    assert 200 <= waited < 260


def test_wait_for_stops_when_the_store_fails(tmp_path) -> None:
    def failing(address: str) -> str | None:
        raise StoreUnavailable("down")

    assert loginwait.wait_for("192.0.2.10", failing, 1.0, str(tmp_path / "none")) < 50


def test_the_servers_waits_settle_found_expired_and_failed() -> None:
    waits = loginwait.Waits()
    waits.hold(5, "192.0.2.10", [], 1.0)
    waits.hold(6, "192.0.2.11", [], 0.005)
    now = time.monotonic() + 0.01
    assert sorted(waits.due(now)) == [5, 6]
    settled = waits.settle([5, 6], set(), now)
    assert [fd for fd, _, _ in settled] == [6]  # its only look was its last
    assert waits.timeout(now) is not None
    settled = waits.settle([5], {"192.0.2.10"}, now)
    assert [fd for fd, _, _ in settled] == [5]
    assert waits.timeout(now) is None
    waits.hold(7, "192.0.2.12", [], 1.0)
    assert [fd for fd, _, _ in waits.settle([7], None, now)] == [7]
