"""What the handler answers to one policy request: a pure function of the request,
the configured answers and a lookup of the client address."""

from __future__ import annotations

from pbs_activated import addresses
from pbs_activated.store import StoreError

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

    from pbs_activated.answer import Request
    from pbs_activated.config import PolicySettings

NEUTRAL = "DUNNO"
"""The answer outside RCPT: we have no opinion on CONNECT, HELO, MAIL, DATA, ..."""

RELAY_CONTEXT = "pbs-relay"
"""The `policy_context` of the recommended line (postfix.py): Postfix asks only about
relaying there, so a miss may wait for a login on its way (awaits_login)."""

NO_LOGIN = "no recent login"


class Decision:
    """An answer and why it was given, with what the audit entry needs."""

    __slots__ = ("action", "reason", "client_address", "user", "waited_ms")

    def __init__(self, action: str, reason: str, client_address: str = "", user: str = "") -> None:
        self.action = action
        self.reason = reason
        self.client_address = client_address
        self.user = user
        self.waited_ms: int | None = None
        """How long the request waited for a login on its way (awaits_login), if it did."""

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, {self.reason!r}, {self.client_address!r}, {self.user!r})"


def decide(
    request: Request, policy: PolicySettings, user_for: Callable[[str], str | None]
) -> Decision:
    """Decide one request. `user_for` looks an address up and may raise StoreError.

    Only RCPT decides, because that is where Postfix evaluates relay restrictions
    and where a recipient is known; everything else is DUNNO. Every path that is not
    a well-formed RCPT request for a valid address with a live authorization ends in
    something other than OK.
    """
    examined = examine(request)
    if isinstance(examined, tuple):
        neutral, reason = examined
        return Decision(NEUTRAL if neutral else policy.unauthorized, reason)
    try:
        user = user_for(examined)
    except StoreError as error:
        return Decision(policy.unavailable, f"lookup failed: {error}", examined)
    if user is None:
        return Decision(policy.unauthorized, NO_LOGIN, examined)
    return Decision(policy.authorized, "recent login", examined, user)


def awaits_login(request: Request, decision: Decision) -> bool:
    """Whether a refusal may be a login still on its way from the journal to the store.

    Only for the recommended line (its policy_context), where every request is a
    relay attempt: a client may send the instant its POP3 session ends, while
    journald tells its readers of new entries 250-500 ms after writing them. The
    old line asks about inbound mail too, which must never wait.
    """
    return decision.reason == NO_LOGIN and request.get("policy_context") == RELAY_CONTEXT


def lookup_address(request: Request) -> str | None:
    """The normalised address `decide` would look up for `request`, or None if none.

    The policy server looks the addresses of many requests up at once before
    deciding them.
    """
    examined = examine(request)
    return None if isinstance(examined, tuple) else examined


def examine(request: Request) -> str | tuple[bool, str]:
    """The normalised client address to look up, or why none is: (neutral?, reason).

    The one home of "which address is looked up": `decide` and `lookup_address`
    both ask here.
    """
    if request.malformed:
        return False, f"malformed request: {request.malformed}"
    if request.get("request") != "smtpd_access_policy":
        return False, "not an smtpd_access_policy request"
    if request.get("protocol_state").upper() != "RCPT":
        return True, "decided at RCPT only"
    raw_address = request.get("client_address")
    try:
        return addresses.normalize(raw_address)
    except addresses.InvalidAddress:
        return False, f"invalid client address {raw_address[:80]!r}"
