"""Which sessions ended with no login line taken for them: doctor's sign of a changed log format.

An administrator changes a login format on a running server: the users who
logged in earlier that day did so in the old format, which the parsers took.
Counted per user, their later sessions would look explained, and doctor would
stay silent exactly when relaying stopped. So each session's end (the server's
MailServer.session_end) is matched to a login line of *that* session, by the
strongest key both lines carry (SessionKeys):

1. the server's session name: Dovecot's `session=<...>` against the mail
   process's `<session>` prefix; Courier's client address and port;
2. the process serving it, for a login that names no session: Dovecot's
   `mpid=` against the prefix's `<pid>`, the journal's _PID for Cyrus;
3. time, for a login that names neither: an earlier login of the same user not
   yet matched to another session.

A login matches one session at most. A session that began before the journal
window (a long IMAP session) has its login outside it: it is left out when its
end dates it (Dovecot's session name, Courier's `time=`), or, for a server
whose every session has a process of its own (Cyrus), when that process wrote
nothing earlier in the window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from pbs_activated.reader.logins.common import IMAP, Login, MailServer


class Ended(NamedTuple):
    """A session that ended with no login line taken for it."""

    user: str
    message: str
    at: float
    """When it ended (Unix s)."""


class _Taken:
    """A login line a parser took, with the keys of its session; `used` once matched."""

    __slots__ = ("process", "session", "used", "user")

    def __init__(self, user: str, session: str, process: str) -> None:
        self.user, self.session, self.process = user, session, process
        self.used = False


def logged_at(entry: Mapping[str, str]) -> float:
    """The journal entry's time (Unix s), from __REALTIME_TIMESTAMP (microseconds)."""
    try:
        return int(entry.get("__REALTIME_TIMESTAMP", "")) / 1_000_000
    except ValueError:
        return 0.0


class Sessions:
    """A unit's journal read in order: its logins taken, its session ends matched to them."""

    def __init__(self, servers: Iterable[MailServer], since: float, imap: bool = True) -> None:
        """`servers` are those whose lines the unit carries; `since` starts the window read."""
        self.servers = tuple(servers)
        self.since = since
        self.imap = imap
        self.missed: list[Ended] = []
        self.last_taken = 0.0
        """When the last login line was taken (Unix s), 0 for never."""
        self._named: dict[str, _Taken] = {}
        # Queues of logins by (process or "", user, names a session, names a process): a
        # session's end looks only in the queues whose logins lack a key it has itself.
        self._queues: dict[tuple[str, str, bool, bool], deque[_Taken]] = {}
        self._pids: set[str] = set()

    def taken(self, entry: Mapping[str, str], login: Login) -> None:
        """Record a login line a parser took, under every key its session has."""
        self.last_taken = max(self.last_taken, logged_at(entry))
        keys: dict[str, str] = {}
        # The keys come after the user's name, which is the client's to choose: a name
        # `x>, mpid=1, session=<a` must not name another session.
        message = entry["MESSAGE"]
        named_at = message.find(login.user)
        tail = message[named_at + len(login.user) :] if named_at >= 0 else message
        for server in self.servers:
            for match in server.sessions.login.finditer(tail):
                keys.update({name: value for name, value in match.groupdict().items() if value})
            if server.sessions.own_process and not keys.get("process"):
                keys["process"] = entry.get("_PID", "")
            if keys:
                break
        taken = _Taken(login.user, keys.get("session", ""), keys.get("process", ""))
        if taken.session:
            self._named[taken.session] = taken
        named, numbered = bool(taken.session), bool(taken.process)
        if taken.process:
            self._queue((taken.process, taken.user, named, True)).append(taken)
        self._queue(("", taken.user, named, numbered)).append(taken)
        self._pids.add(entry.get("_PID", ""))

    def other(self, entry: Mapping[str, str]) -> None:
        """Match an entry that is no login to the login of the session it ends, if it ends one."""
        message = entry["MESSAGE"]
        for server in self.servers:
            match = server.session_end.search(message)
            if match is None:
                continue
            groups = {name: value for name, value in match.groupdict().items() if value}
            if groups.get("protocol") == IMAP and not self.imap:
                break
            process = groups.get("process", "")
            if server.sessions.own_process and not process:
                process = entry.get("_PID", "")
            at = logged_at(entry)
            explained = self._explain(groups.get("user", ""), groups.get("session", ""), process)
            if not explained and self._began_in_window(server, groups, at, entry):
                self.missed.append(Ended(groups.get("user", ""), message, at))
            break
        self._pids.add(entry.get("_PID", ""))

    def _explain(self, user: str, session: str, process: str) -> bool:
        """Use up the login of this session: by its name, else its process, else its user."""
        named = self._named.get(session) if session else None
        if named is not None:
            named.used = True
            return True
        # The process, for a login that names no session (or an end that names none).
        candidates = [(process, user, False, True)] if process else []
        if process and not session:
            candidates.append((process, user, True, True))
        # The user alone, for a login that lacks the keys the end has.
        candidates += [
            ("", user, named, numbered)
            for named in (False, True)
            for numbered in (False, True)
            if not (named and session) and not (numbered and process)
        ]
        for key in candidates:
            queue = self._queue(key)
            while queue and queue[0].used:
                queue.popleft()
            if queue:
                queue.popleft().used = True
                return True
        return False

    def _queue(self, key: tuple[str, str, bool, bool]) -> deque[_Taken]:
        return self._queues.setdefault(key, deque())

    def _began_in_window(
        self, server: MailServer, groups: dict[str, str], at: float, entry: Mapping[str, str]
    ) -> bool:
        """Whether the session's login line, if there was one, falls in the window read."""
        started = server.sessions.started(groups, at)
        if started is not None:
            return started >= self.since
        if server.sessions.own_process:
            return entry.get("_PID", "") in self._pids
        return True
