"""One round's lookups: the policy server asks the store about a round's addresses at once.

The requests that arrive together (server.py) are looked up together, one GET
or MGET for all, and decided from its answer; a connection held for a login
(loginwait.Waits) is resumed from the same kind of round.
"""

from __future__ import annotations

from pbs_activated.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pbs_activated.store.lookup import Lookups


def looked_up(lookup: Lookups, wanted: list[str]) -> UserFor:
    """Look up these addresses at once (GET or MGET); a lookup function for decide."""
    if not wanted:
        return UserFor(lookup, {}, None)
    try:
        if len(wanted) == 1:  # a GET's reply is read faster than MGET's
            users = {wanted[0]: lookup.user_for(wanted[0])}
        else:
            users = dict(zip(wanted, lookup.users_for(wanted), strict=True))
    except StoreError as error:
        return UserFor(lookup, {}, error)
    return UserFor(lookup, users, None)


class UserFor:
    """`user_for` for decide, answered from one round's lookup (GET or MGET).

    An address the round did not fetch is looked up on its own, and a failed
    MGET is the failure of every lookup of the round: the requests get the
    unavailable answer, and the next round connects again.
    """

    __slots__ = ("lookup", "users", "failure")

    def __init__(
        self, lookup: Lookups, users: dict[str, str | None], failure: StoreError | None
    ) -> None:
        self.lookup = lookup
        self.users = users
        self.failure = failure

    def __call__(self, address: str) -> str | None:
        if self.failure is not None:
            raise self.failure
        if address in self.users:
            return self.users[address]
        return self.lookup.user_for(address)
