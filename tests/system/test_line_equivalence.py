"""0.2.0's Postfix line against 0.3.0's, reply for reply, on a booted Debian 12 and 13 (issue #22).

The new line (pbs_activated.admin.postfix.relay_restrictions) puts
`permit_auth_destination` before the policy check, so that mail for our own
domains never reaches the policy service. The old one
(legacy_relay_restrictions), which every upgraded site still has, asks about
every RCPT. Both are run here, one after the other, over every combination of:

- clients: one in mynetworks (127.0.0.1), one SASL-authenticated (Postfix's
  AUTH through Dovecot's auth service), one authorized by `pbs-activated grant`,
  a stranger;
- recipients (RECIPIENTS): mydestination, a virtual alias domain, a virtual
  mailbox domain, a relay_domains domain (backup MX), a remote domain,
  `user%remote@local`, `"user@remote"@local`, an unknown local user, and a
  recipient refused by a recipient restriction (check_recipient_access);
- policy states: up, pbs-policy.socket stopped, the handler hung (a drop-in
  makes every new handler sleep without answering: SIGSTOP of the running
  handlers, as test_faults.py does, would leave each new connection a fresh
  handler), the store down;
- services: smtp on 25, and submission on 587 with the `-o` overrides of
  Debian's own commented master.cf (mailhost.debian_submission);
- `compatibility_level` 3.6 (relay restrictions before recipient restrictions)
  and 2 (the other way round).

Each reply is compared by code, enhanced status code and text. The only
difference allowed is the intended one: inbound mail never reaches the policy
service, so while it is unreachable, hung or without its store, an inbound RCPT
that another restriction rejects gets that 5xx (the same reply as when the
service is up) where the old line's DEFER_IF_REJECT gave 450. Every other
difference fails the test, which prints the differences; the whole table goes
to build/line-equivalence.md (and .json, merged across releases).

What keeps it affordable: one swaks session (Debian's, in the container,
`--quit-after RCPT`, never DATA) per client, service, state, line and
compatibility level, with every recipient as a RCPT, the sessions of one
configuration all at once. Behind a stopped socket or a hung handler Postfix
waits per RCPT (its retry_delay of 1 s; timeout x try_limit), so there the
sessions that reach the service (smtp's, of the granted client and the
stranger) are split into one session per recipient, run at once; and in the
hung state alone both lines carry `timeout=1s, try_limit=1` instead of 10 s
twice, which changes how long Postfix waits, not what it answers (the
default_action once the wait is over).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import pytest
from container import Container
from mailhost import (
    RcptReply,
    SwaksSession,
    debian_submission,
    postfix_sasl_via_dovecot,
    postfix_settings,
    store_unit,
    swaks_at_once,
    without_idle_smtpd,
)
from product import REPO, AddressPool, wait_active

from pbs_activated.admin import postfix

pytestmark = [pytest.mark.system, pytest.mark.deliberate_faults]

RECIPIENTS = {
    "mydestination": "alice@example.test",
    "virtual alias": "info@alias.test",
    "virtual mailbox": "carol@mailbox.test",
    "relay_domains (backup MX)": "someone@backup.test",
    "remote": "someone@remote.test",
    "user%remote@local": "someone%remote.test@example.test",
    '"user@remote"@local': '"someone@remote.test"@example.test',
    "unknown local user": "no-such-user@example.test",
    "recipient restriction": "refused@example.test",
}
INBOUND = {
    "mydestination",
    "virtual alias",
    "virtual mailbox",
    "relay_domains (backup MX)",
    "unknown local user",
    "recipient restriction",
}
"""The recipients permit_auth_destination accepts: the new line never asks about them."""

ACCESS = "texthash:/etc/postfix/pbs-test-recipients"
MAPS = {
    "/etc/postfix/pbs-test-virtual-alias": "info@alias.test alice@example.test\n",
    "/etc/postfix/pbs-test-virtual-mailbox": "carol@mailbox.test mailbox.test/carol/\n",
    "/etc/postfix/pbs-test-recipients": "refused@example.test REJECT no mail for this address\n",
}
DOMAINS = {
    "virtual_alias_domains": "alias.test",
    "virtual_alias_maps": "texthash:/etc/postfix/pbs-test-virtual-alias",
    "virtual_mailbox_domains": "mailbox.test",
    "virtual_mailbox_maps": "texthash:/etc/postfix/pbs-test-virtual-mailbox",
    "relay_domains": "backup.test",
    "smtpd_recipient_restrictions": f"check_recipient_access {ACCESS}",
}

CLIENTS = ("mynetworks", "SASL", "authorized", "stranger")
ASKING = ("authorized", "stranger")
"""The clients whose RCPTs can reach the policy service (not permitted before it)."""
SERVICES = {"smtp": 25, "submission": 587}
COMPATIBILITY_LEVELS = ("3.6", "2")
LINES = {"old": postfix.legacy_relay_restrictions(), "new": postfix.relay_restrictions()}

HANDLER_SOCKET = "pbs-policy.socket"
HANG_DROP_IN = "/run/systemd/system/pbs-policy@.service.d/pbs-test-hang.conf"
HUNG_OPTIONS = "timeout=1s, try_limit=1"
OUTAGES = ("socket stopped", "handler hung", "store down")
WAITING = ("socket stopped", "handler hung")
"""The states in which Postfix waits per RCPT that reaches the service."""

MATRIX = REPO / "build" / "line-equivalence.json"
SAME, INTENDED, UNINTENDED = "same", "intended", "UNINTENDED"


Condition = Callable[[Container], contextlib.AbstractContextManager[None]]
"""A policy state: entered for the body of a `with`, left as it was found after."""


@contextlib.contextmanager
def up(ct: Container) -> Iterator[None]:
    yield


def stopped(unit_of: Callable[[Container], str]) -> Condition:
    """A state in which a unit (the socket, the store) is stopped, started again after."""

    @contextlib.contextmanager
    def condition(ct: Container) -> Iterator[None]:
        unit = unit_of(ct)
        ct.systemctl("stop", unit)
        try:
            yield
        finally:
            ct.systemctl("start", unit)
            wait_active(ct, unit)

    return condition


@contextlib.contextmanager
def handler_hung(ct: Container) -> Iterator[None]:
    """Every handler started takes its connection and never answers."""
    ct.write_file(HANG_DROP_IN, "[Service]\nExecStart=\nExecStart=/bin/sleep 600\n")
    ct.systemctl("daemon-reload")
    try:
        yield
    finally:
        ct.run(["rm", "-f", HANG_DROP_IN])
        ct.systemctl("daemon-reload")
        stop_hung_handlers(ct)


def stop_hung_handlers(ct: Container) -> None:
    ct.systemctl("stop", "pbs-policy@*.service", check=False)


STATES: dict[str, Condition] = {
    "up": up,
    "socket stopped": stopped(lambda ct: HANDLER_SOCKET),
    "handler hung": handler_hung,
    "store down": stopped(store_unit),
}


def line_in(line: str, state: str) -> str:
    """The line as run in `state`: waiting 1 s, once, for a hung handler."""
    value = LINES[line]
    if state != "handler hung":
        return value
    assert "timeout=10s" in value, value
    return value.replace("timeout=10s", HUNG_OPTIONS)


@dataclass
class Cell:
    """One client's RCPT to one recipient in one configuration, under both lines."""

    release: str
    compatibility_level: str
    service: str
    state: str
    client: str
    recipient: str
    old: str = ""
    new: str = ""
    old_seconds: float = 0.0
    new_seconds: float = 0.0
    verdict: str = ""


@pytest.fixture(scope="module")
def clients(product_host: Container, addresses: AddressPool) -> Iterator[dict[str, str]]:
    """The product host with the domains, maps, SASL and submission of the matrix, and
    the clients' source addresses; everything as it was after."""
    ct = product_host
    for path, text in MAPS.items():
        ct.write_file(path, text)
    kept = {
        name: ct.run(["postconf", "-h", name]).stdout.strip()
        for name in ("smtpd_relay_restrictions", "compatibility_level")
    }
    sources = {
        "mynetworks": "127.0.0.1",
        "SASL": addresses.v4(),
        "authorized": addresses.v4(),
        "stranger": addresses.v4(),
    }
    ct.run(["pbs-activated", "grant", sources["authorized"], "--user", "alice"])
    try:
        with (
            postfix_settings(ct, {**DOMAINS, **kept}),
            postfix_sasl_via_dovecot(ct),
            debian_submission(ct),
        ):
            yield sources
    finally:
        ct.run(["rm", "-f", *MAPS])
        ct.run(["pbs-activated", "revoke", sources["authorized"]], check=False)


def sessions(sources: dict[str, str], state: str) -> list[SwaksSession]:
    """Every client's session on every service; split per recipient where Postfix waits."""
    plan = []
    for client, source in sources.items():
        user = "alice" if client == "SASL" else ""
        for service, port in SERVICES.items():
            name = f"{client}-{service}"
            if state in WAITING and service == "smtp" and client in ASKING:
                plan += [
                    SwaksSession(f"{name}-{index}", source, (recipient,), port, user)
                    for index, recipient in enumerate(RECIPIENTS.values())
                ]
            else:
                plan.append(SwaksSession(name, source, tuple(RECIPIENTS.values()), port, user))
    return plan


def replies_by_cell(
    plan: list[SwaksSession], replies: dict[str, list[RcptReply]]
) -> dict[tuple[str, str, str], RcptReply]:
    """{(client, service, recipient name): reply} from the sessions' replies."""
    names = {address: name for name, address in RECIPIENTS.items()}
    found = {}
    for session in plan:
        client, service = session.name.split("-")[:2]
        for reply in replies[session.name]:
            found[(client, service, names[reply.recipient])] = reply
    return found


def judge(cells: dict[str, Cell]) -> None:
    """Each cell's verdict: the same reply, the intended difference, or neither."""
    for cell in cells.values():
        if cell.old == cell.new:
            cell.verdict = SAME
            continue
        when_up = cells.get(key(cell, state="up"))
        intended = (
            cell.state in OUTAGES
            and cell.service == "smtp"
            and cell.recipient in INBOUND
            and cell.old.startswith("4")
            and cell.new.startswith("5")
            and when_up is not None
            and cell.new == when_up.new
        )
        cell.verdict = INTENDED if intended else UNINTENDED


def key(cell: Cell, **changed: str) -> str:
    fields = {**asdict(cell), **changed}
    return "|".join(
        str(fields[name])
        for name in ("release", "compatibility_level", "service", "state", "client", "recipient")
    )


def test_the_new_line_answers_as_the_old_but_for_inbound_mail_during_an_outage(
    product_host: Container, clients: dict[str, str]
) -> None:
    ct = product_host
    release = ct.target.release
    cells: dict[str, Cell] = {}
    seconds: dict[str, float] = {}
    for state, condition in STATES.items():
        started = time.monotonic()
        with condition(ct):
            for level in COMPATIBILITY_LEVELS:
                for line in LINES:
                    ct.run(
                        [
                            "postconf",
                            "-e",
                            f"smtpd_relay_restrictions={line_in(line, state)}",
                            f"compatibility_level={level}",
                        ]
                    )
                    without_idle_smtpd(ct)
                    plan = sessions(clients, state)
                    found = replies_by_cell(plan, swaks_at_once(ct, plan))
                    for (client, service, recipient), reply in found.items():
                        cell = Cell(release, level, service, state, client, recipient)
                        cell = cells.setdefault(key(cell), cell)
                        setattr(cell, line, reply.reply)
                        setattr(cell, f"{line}_seconds", reply.seconds)
                    if state == "handler hung":
                        stop_hung_handlers(ct)
        seconds[state] = time.monotonic() - started
    judge(cells)
    write_matrix(cells, release, seconds)

    unintended = [cell for cell in cells.values() if cell.verdict == UNINTENDED]
    assert not unintended, render_differences(unintended)
    smtp_up = {
        (c.compatibility_level, c.client, c.recipient): c
        for c in cells.values()
        if c.service == "smtp" and c.state == "up"
    }
    for level in COMPATIBILITY_LEVELS:  # the policy service really answered, both lines
        assert smtp_up[(level, "authorized", "remote")].new.startswith("250 ")
        assert smtp_up[(level, "stranger", "remote")].new.startswith("554 5.7.1 ")
    for level in COMPATIBILITY_LEVELS:  # and was really out of reach in the outages
        for state in OUTAGES:
            unknown = cells[f"{release}|{level}|smtp|{state}|stranger|unknown local user"]
            assert unknown.verdict == INTENDED, unknown


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def write_matrix(cells: dict[str, Cell], release: str, seconds: dict[str, float]) -> None:
    """Merge this release's cells into build/line-equivalence.json and render the .md."""
    MATRIX.parent.mkdir(exist_ok=True)
    known: dict[str, dict[str, object]] = {}
    if MATRIX.exists():
        with contextlib.suppress(ValueError):
            known = json.loads(MATRIX.read_text())
    known = {k: v for k, v in known.items() if not k.startswith(f"{release}|")}
    known.update({k: asdict(cell) for k, cell in cells.items()})
    known[f"{release}|seconds"] = {"seconds": seconds}
    MATRIX.write_text(json.dumps(known, indent=1) + "\n")
    MATRIX.with_suffix(".md").write_text(render(known))
    differences = [cell for cell in cells.values() if cell.verdict != SAME]
    print("\n" + render_differences(differences))


COLUMNS = ("release", "compatibility_level", "service", "state", "client", "recipient")


def rows(known: dict[str, dict[str, object]]) -> list[Cell]:
    return sorted(
        (Cell(**value) for value in known.values() if "recipient" in value),  # type: ignore[arg-type]
        key=lambda cell: tuple(str(getattr(cell, name)) for name in COLUMNS),
    )


def render_differences(cells: list[Cell]) -> str:
    lines = [
        "| release | compat | service | state | client | recipient | old line | new line"
        " | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(cells, key=lambda c: tuple(str(getattr(c, n)) for n in COLUMNS)):
        lines.append(
            f"| {cell.release} | {cell.compatibility_level} | {cell.service} | {cell.state}"
            f" | {cell.client} | {cell.recipient} | {cell.old} | {cell.new} | {cell.verdict} |"
        )
    return "\n".join(lines) + "\n"


def render(known: dict[str, dict[str, object]]) -> str:
    """The markdown: per release, the time each state took and the verdicts counted, the
    differences, then every cell."""
    cells = rows(known)
    lines = ["# Old line against new line (tests/system/test_line_equivalence.py)", ""]
    for release in sorted({cell.release for cell in cells}):
        counted = {verdict: 0 for verdict in (SAME, INTENDED, UNINTENDED)}
        for cell in cells:
            if cell.release == release:
                counted[cell.verdict] = counted.get(cell.verdict, 0) + 1
        timing = known.get(f"{release}|seconds", {}).get("seconds", {})
        assert isinstance(timing, dict)
        spent = ", ".join(f"{state} {value:.1f} s" for state, value in timing.items())
        lines.append(
            f"- {release}: {sum(counted.values())} RCPTs per line; "
            + ", ".join(f"{verdict} {count}" for verdict, count in counted.items())
            + f"; {spent}"
        )
    lines += ["", "## Differences", "", render_differences([c for c in cells if c.verdict != SAME])]
    lines += ["## Every RCPT", "", render_differences(cells)]
    return "\n".join(lines)


def test_the_verdicts_allow_only_the_intended_difference() -> None:
    """judge() without a container: the intended 450 -> 5xx is allowed, nothing else."""

    def cell(service: str, state: str, recipient: str, old: str, new: str) -> Cell:
        return Cell("bookworm", "3.6", service, state, "stranger", recipient, old, new)

    unknown = "unknown local user"
    cells = [
        cell("smtp", "up", unknown, "550 5.1.1 x", "550 5.1.1 x"),
        cell("smtp", "store down", unknown, "450 4.1.1 x", "550 5.1.1 x"),
        cell("smtp", "store down", "remote", "450 4.7.1 x", "554 5.7.1 x"),
        cell("submission", "store down", unknown, "450 4.1.1 x", "550 5.1.1 x"),
        cell("smtp", "socket stopped", unknown, "450 4.1.1 x", "550 5.1.1 y"),
    ]
    judge({key(each): each for each in cells})
    assert [each.verdict for each in cells] == [SAME, INTENDED, UNINTENDED, UNINTENDED, UNINTENDED]
