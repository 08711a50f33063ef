"""What the handler (answer/handler.py) and the server (server.py) share: one answer path.

Both read chunks from Postfix connections and, for each chunk, do the same
things in the same order, here:

1. `prefetch`: send the lookup of the RCPT request the chunk holds, guessed from
   its raw bytes, so that Redis answers while the chunk is parsed;
2. parse it (the package's RequestParser), then `answer`: decide every request
   (decision.decide), encode the replies in one piece;
3. the caller writes the replies, and only then records the audit entries
   (`audit_entry`), so that a slow journal never delays Postfix;
4. if `answer` stopped before a relay attempt that may await a login on its way
   (decision.awaits_login), the caller waits for it (loginwait.py) and answers
   the rest.

They differ only in how they wait for connections and write: the handler
blocks on its one connection; the server multiplexes many and looks up a
whole round's addresses at once.
"""

from __future__ import annotations

import posix  # not os: its import is ~1 ms of every handler's start (defaults.environment)

from pbs_activated import addresses, audit
from pbs_activated.answer import format_reply, rcpt_client_address
from pbs_activated.answer.decision import awaits_login, decide
from pbs_activated.config import Config, ConfigError
from pbs_activated.config.load import load
from pbs_activated.store.lookup import BrokenConfigLookup, Lookup

TYPE_CHECKING = False  # typing costs the handler milliseconds; annotations only
if TYPE_CHECKING:
    from collections.abc import Callable

    from pbs_activated.answer import Request
    from pbs_activated.answer.decision import Decision
    from pbs_activated.config import PolicySettings
    from pbs_activated.store.lookup import Lookups


class Configured:
    """The configuration and a lookup on its store, read again whenever the file changes.

    Postfix keeps a policy connection for up to `smtpd_policy_service_max_ttl`
    (1000 s), and the server lives as long as connections keep coming: a
    handler that kept the file it started with would keep answering from a
    broken file after it was mended (or from the old store after a move).
    So before every chunk the file's stat is compared with the one taken
    before it was last read (inode, size, change times: what the parse cache
    keys on too), and a change means a new read and a new lookup. The stat
    is taken before the read, so an edit racing it is read at the next chunk.
    What the file does not name (a rotated secret file) is read at the next
    connection.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self.config, self.lookup = config_and_lookup(path)

    def refresh(self) -> bool:
        """Read the file again if it changed since it was read; True if it did."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.lookup.close()
        self.config, self.lookup = config_and_lookup(self.path)
        return True

    def close(self) -> None:
        self.lookup.close()


def _stamp(path: str) -> tuple[int, ...] | None:
    try:
        status = posix.stat(path)
    except OSError:
        return None  # missing (every default) or unreadable (broken): either way, as read
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def config_and_lookup(config_path: str) -> tuple[Config, Lookups]:
    """The config and a lookup on its store; for a broken config, defaults and no store.

    A broken config is audited and then answered around (see BrokenConfigLookup).
    """
    try:
        config = load(config_path)
        return config, Lookup(config.redis)
    except ConfigError as error:
        audit.send(audit.ERROR, f"cannot use configuration: {error}", PBS_ERROR="config")
        return Config(config_path), BrokenConfigLookup(str(error))


def prefetch(lookup: Lookups, chunks: list[bytes]) -> None:
    """Send the lookups of the RCPT requests these chunks hold, guessed, before parsing them."""
    guesses = {guessed_address(chunk) for chunk in chunks}
    guesses.discard(None)
    if guesses:
        lookup.prefetch(sorted(guesses))  # type: ignore[arg-type]


def guessed_address(chunk: bytes) -> str | None:
    """The normalised client address of the one RCPT request in `chunk`, unparsed; or None.

    Only a guess to send the lookup early: the parsed request decides (through
    decision.examine), and a lookup for another address does not use the reply.
    """
    guess = rcpt_client_address(chunk)
    return addresses.normalize_or_none(guess) if guess is not None else None


def answer(
    requests: list[Request],
    policy: PolicySettings,
    user_for: Callable[[str], str | None],
    waited: dict[str, int | None],
) -> tuple[bytes, list[Decision], str | None]:
    """Decide the requests in order; return the replies to write (one piece), the decisions,
    and the address the next request awaits a login for, or None when all were decided.

    `waited` is the connection's record of addresses it has waited for (address:
    the ms waited, None once a decision has reported it): each waits once at most.
    When a request awaits a login for an address not in it, the requests before
    it are answered and the caller waits (loginwait), records the wait, and calls
    again with that request and the rest.
    """
    decisions: list[Decision] = []
    for request in requests:
        decision = decide(request, policy, user_for)
        address = decision.client_address
        if address in waited:
            decision.waited_ms, waited[address] = waited[address], None
        elif policy.login_wait > 0 and awaits_login(request, decision):
            return _replies(decisions), decisions, address
        decisions.append(decision)
    return _replies(decisions), decisions, None


def _replies(decisions: list[Decision]) -> bytes:
    return b"".join([format_reply(decision.action) for decision in decisions])


def entries(requests: list[Request], decisions: list[Decision]) -> list[tuple[bytes, str]]:
    """The audit entries of answered requests, to deliver once the replies are written."""
    return [audit_entry(r, d) for r, d in zip(requests, decisions, strict=True)]


def problem(priority: int, message: str, **fields: object) -> tuple[bytes, str]:
    """An audit entry about a connection (closed, over a limit), delivered as `entries` are."""
    return audit.entry(priority, message, **fields), message


def audit_entry(request: Request, decision: Decision) -> tuple[bytes, str]:
    """The encoded journal entry of one decision and its message: INFO at RCPT, DEBUG else."""
    state = request.get("protocol_state")
    priority = audit.INFO if state.upper() == "RCPT" else audit.DEBUG
    who = f" ({decision.user})" if decision.user else ""
    client = decision.client_address or request.get("client_address")[:80]
    waited = f" after waiting {decision.waited_ms} ms" if decision.waited_ms is not None else ""
    message = (
        f"{decision.action} for {client or 'no address'}{who} at {state or 'no state'}: "
        f"{decision.reason}{waited}"
    )
    payload = audit.entry(
        priority,
        message,
        PBS_ACTION=decision.action.split(" ", 1)[0],
        PBS_ACTION_TEXT=decision.action,
        PBS_REASON=decision.reason,
        PBS_CLIENT_ADDRESS=client,
        PBS_USER=decision.user,
        PBS_PROTOCOL_STATE=state,
        PBS_SENDER=request.get("sender"),
        PBS_RECIPIENT=request.get("recipient"),
        PBS_QUEUE_ID=request.get("queue_id"),
        PBS_CLIENT_NAME=request.get("client_name"),
        PBS_HELO_NAME=request.get("helo_name"),
        PBS_INSTANCE=request.get("instance"),
        PBS_WAITED_MS=decision.waited_ms,
    )
    return payload, message
