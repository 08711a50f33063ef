"""Waiting, bounded, for a login on its way from the journal to the store (issue #22).

A client may send the instant its POP3 session ends; its login is in the
journal by then, but the reader hears of it only at journald's notice, 250-500
ms later. A relay attempt that finds no authorization under the recommended
line (decision.awaits_login) therefore wakes the reader (wakeup.py) and asks
the store again, at growing intervals, until the address is authorized or
`[policy] login_wait` has passed. At most once per address and policy
connection (service.answer keeps count), so a stranger's session of 20 RCPTs
waits once.

The handler waits here, blocking (its connection has nothing else to do); the
Accept=no server keeps the same schedule without blocking (server.py), so its
other connections never wait for this one.
"""

from __future__ import annotations

import time

from pbs_activated import wakeup
from pbs_activated.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pbs_activated.answer import Request

FIRST_LOOK = 0.005
"""Seconds before the first look: a woken reader on this host has written the login by then."""

LONGEST_GAP = 0.1
"""Seconds between looks at most: each is one GET, about 0.1 ms of the store's time."""


def looks(limit: float) -> Iterator[float]:
    """When to look again, in seconds from the start of a wait: 5, 15, 35, 75, 155 ms,
    then every 100 ms, the last exactly at `limit`."""
    gap, at = FIRST_LOOK, 0.0
    while at < limit:
        at = min(at + gap, limit)
        yield at
        gap = min(gap * 2, LONGEST_GAP)


def wait_for(
    address: str, user_for: Callable[[str], str | None], limit: float, wake_path: str
) -> int:
    """Wait until `address` is authorized, the store fails or `limit` s pass; the ms waited.

    The reader is woken before every look: a login that reached the journal
    after the first wake-up is then read at the next, not at journald's notice.
    """
    started = time.monotonic()
    for at in looks(limit):
        wakeup.wake(wake_path)
        pause = started + at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            if user_for(address) is not None:
                break
        except StoreError:  # the decision that follows meets it and answers `unavailable`
            break
    return round((time.monotonic() - started) * 1000)


class Held:
    """A server connection's requests, held while it waits for a login at `address`."""

    __slots__ = ("address", "requests", "started", "looks", "next_look")

    def __init__(self, address: str, requests: list[Request], limit: float, now: float) -> None:
        self.address = address
        self.requests = requests
        self.started = now
        self.looks = looks(limit)
        self.next_look = now + next(self.looks)


class Waits:
    """The server's waits, by connection: the same schedule as `wait_for`, never blocking.

    The server's loop sleeps until the next look is due (`timeout`), then looks
    up every due address at once and resumes the connections that are settled
    (`settle`); its other connections are served meanwhile as always.
    """

    def __init__(self) -> None:
        self.held: dict[int, Held] = {}

    def hold(self, fd: int, address: str, requests: list[Request], limit: float) -> None:
        self.held[fd] = Held(address, requests, limit, time.monotonic())

    def release(self, fd: int) -> None:
        self.held.pop(fd, None)

    def timeout(self, now: float) -> float | None:
        """Seconds until the next look is due (0 if one is), None when nothing waits."""
        if not self.held:
            return None
        return max(0.0, min(held.next_look for held in self.held.values()) - now)

    def due(self, now: float) -> list[int]:
        """The connections whose look is due."""
        return [fd for fd, held in self.held.items() if held.next_look <= now]

    def settle(
        self, due: list[int], authorized: set[str] | None, now: float
    ) -> list[tuple[int, Held, int]]:
        """(fd, held, ms waited) of the due connections whose wait is over: their address is
        now `authorized`, their time is up, or the store failed (`authorized` None: the
        decisions that follow meet the failure). The others' next look is scheduled."""
        settled = []
        for fd in due:
            held = self.held[fd]
            following = next(held.looks, None)
            if authorized is None or held.address in authorized or following is None:
                del self.held[fd]
                settled.append((fd, held, round((now - held.started) * 1000)))
            else:
                held.next_look = held.started + following
        return settled
