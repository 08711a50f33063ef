"""doctor's Postfix checks: our check_policy_service is where it decides, and asks our socket.

Read from `postconf -x` (main.cf, every `$name` expanded) and `postconf -P -x`
(master.cf's `-o` overrides: submission and smtps often carry their own
restrictions), for each `postmulti` instance. The line we recommend is
pbs_activated.admin.postfix's; what matters about its place:

- before `reject_unauth_destination` / `defer_unauth_destination`: after it,
  every relay attempt is refused before we are asked (a useless service);
- no bare `permit` before that refusal: that is an open relay, with or without us;
- in `smtpd_relay_restrictions`: a line in `smtpd_recipient_restrictions` is
  never reached for relaying while the relay restrictions refuse first (as
  Debian's default, ending in `defer_unauth_destination`, does);
- naming the socket our enabled socket unit listens on, relative to Postfix's
  `queue_directory` (an absolute path, in a chrooted smtpd, is under it too).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from pbs_activated.admin import postfix
from pbs_activated.admin.doctor.findings import ERROR, OK, UNKNOWN, WARNING, Finding, Host
from pbs_activated.admin.doctor.postconf import Restriction, parameters, restrictions
from pbs_activated.admin.doctor.systemd import policy_listeners
from pbs_activated.answer.decision import RELAY_CONTEXT
from pbs_activated.config import Config

REFUSALS = ("reject_unauth_destination", "defer_unauth_destination")
RELAY = "smtpd_relay_restrictions"
RECIPIENT = "smtpd_recipient_restrictions"


def socket_path(service: str, queue_directory: str, chrooted: bool) -> str:
    """Where a `unix:` policy service's socket is on the host ('' for inet:)."""
    if service.startswith("inet:"):
        return ""
    path = service.removeprefix("unix:")
    if not path.startswith("/"):
        return os.path.normpath(os.path.join(queue_directory, path))
    return os.path.normpath(queue_directory + path) if chrooted else path


def analyse(
    where: str,
    relay: str,
    recipient: str,
    queue_directory: str,
    chrooted: bool,
    listening: set[str],
) -> list[Finding]:
    """The findings for one smtpd's restrictions (`where`: main.cf, or a master.cf service)."""
    findings: list[Finding] = []
    relay_list = restrictions(relay)
    names = [item.name for item in relay_list]
    refusal = next((index for index, name in enumerate(names) if name in REFUSALS), len(names))
    if "permit" in names[:refusal]:
        findings.append(
            Finding(
                "postfix.open-relay",
                ERROR,
                f"{where}: {RELAY} has a bare `permit` before {REFUSALS[0]}: an open relay",
                f"remove `permit` and set {RELAY} = {postfix.relay_restrictions()}",
            )
        )
    ours = [(index, item) for index, item in enumerate(relay_list) if _policy(item)]
    mine = [
        (index, item)
        for index, item in ours
        if socket_path(item.service, queue_directory, chrooted) in listening
        or item.service in listening
    ]
    in_recipient = [item for item in restrictions(recipient) if _policy(item)]
    if not ours:
        recipient_names = [item.name for item in restrictions(recipient)]
        sasl_only = _ends_in_reject(names) or _ends_in_reject(recipient_names)
        return findings + _not_in_relay(where, names, refusal, bool(in_recipient), sasl_only)
    if not mine:
        named = ", ".join(
            f"{item.service} ({socket_path(item.service, queue_directory, chrooted) or 'tcp'})"
            for _, item in ours
        )
        findings.append(
            Finding(
                "postfix.socket",
                ERROR,
                f"{where}: check_policy_service names {named}, where no policy socket of ours"
                f" listens ({', '.join(sorted(listening)) or 'none listening'})",
                f"name {postfix.POLICY_SERVICE} (under queue_directory {queue_directory})",
            )
        )
        return findings
    index, item = mine[0]
    if index > refusal:
        return findings + [
            Finding(
                "postfix.position",
                ERROR,
                f"{where}: check_policy_service comes after {names[refusal]}, which refuses"
                " every relay attempt before we are asked",
                f"put it before {names[refusal]}: {postfix.relay_restrictions()}",
            )
        ]
    early = [name for name in postfix.PERMITTED_FIRST if name in names[index:refusal]]
    if early:
        findings.append(
            Finding(
                "postfix.position",
                WARNING,
                f"{where}: check_policy_service comes before {', '.join(early)}: asked for"
                " clients that may relay anyway",
                f"put it after them: {postfix.relay_restrictions()}",
            )
        )
    options = dict(item.options)
    missing = [f"{n}={v}" for n, v in postfix.POLICY_OPTIONS if options.get(n) != v]
    missing = [m for m in missing if not m.startswith("policy_context=")]  # _relaying_only's
    if missing:
        findings.append(
            Finding(
                "postfix.settings",
                WARNING,
                f"{where}: check_policy_service lacks {', '.join(missing)} (pbs-activated(8),"
                " POSTFIX: without default_action a stopped service fails local mail too)",
                f"write it as {postfix.restriction()}",
            )
        )
    findings += _relaying_only(where, names, index, options.get("policy_context", ""))
    if not findings:
        findings.append(
            Finding(
                "postfix.line",
                OK,
                f"{where}: check_policy_service {item.service} before {names[refusal]}",
            )
        )
    return findings


def _ends_in_reject(names: list[str]) -> bool:
    """Whether a restriction list ends in a bare `reject`: nobody it did not permit gets by."""
    return bool(names) and names[-1] == "reject"


def _not_in_relay(
    where: str, names: list[str], refusal: int, in_recipient: bool, sasl_only: bool
) -> list[Finding]:
    """The findings for an smtpd whose relay restrictions do not ask us."""
    if in_recipient and refusal < len(names):
        return [
            Finding(
                "postfix.useless",
                ERROR,
                f"{where}: check_policy_service is in {RECIPIENT}, but {RELAY}"
                f" refuses relaying first ({names[refusal]}): no login ever relays",
                f"move it to {RELAY}: {postfix.relay_restrictions()}",
            )
        ]
    if in_recipient:
        return [
            Finding(
                "postfix.recipient",
                WARNING,
                f"{where}: check_policy_service is in {RECIPIENT}: every inbound RCPT asks it,"
                " and a relay sent right after its login may bounce",
                f"move it to {RELAY}: {postfix.relay_restrictions()}",
            )
        ]
    if sasl_only:
        # Debian's submission/submissions (`-o smtpd_recipient_restrictions=
        # permit_sasl_authenticated,reject`): only SASL clients send here, and
        # permit_auth_destination would open it.
        return [Finding("postfix.line", OK, f"{where}: a list ends in reject: SASL only")]
    return [
        Finding(
            "postfix.missing",
            ERROR,
            f"{where}: no check_policy_service in {RELAY}: no login ever relays",
            f"postconf -e '{RELAY} = {postfix.relay_restrictions()}'; postfix reload",
        )
    ]


def _relaying_only(where: str, names: list[str], index: int, context: str) -> list[Finding]:
    """Whether the line asks us about relaying only, as 0.3's does (postfix.py says why).

    A warning, not a note, for 0.2's line: besides asking about every inbound
    message, it bounces (554, permanent) a relay sent within half a second of
    its login, which its user sees; the fix is one postconf command.
    """
    before = names[:index]
    if postfix.LOCAL_DESTINATIONS not in before:
        if context == RELAY_CONTEXT:
            problem = "marks itself policy_context=pbs-relay, so every inbound RCPT waits"
        else:
            problem = "asks about every inbound RCPT, and a relay right after its login may bounce"
        return [
            Finding(
                "postfix.legacy",
                WARNING,
                f"{where}: no {postfix.LOCAL_DESTINATIONS} before check_policy_service:"
                f" it {problem}",
                f"put {postfix.LOCAL_DESTINATIONS} directly before it, written as"
                f" {postfix.restriction()}, ending in {postfix.REFUSAL}",
            )
        ]
    findings = []
    if _ends_in_reject(names):
        findings.append(
            Finding(
                "postfix.submission",
                WARNING,
                f"{where}: {postfix.LOCAL_DESTINATIONS} in a list that ends in reject: it"
                " accepts unauthenticated mail for local domains",
                f"remove {postfix.LOCAL_DESTINATIONS} and check_policy_service from it",
            )
        )
    between = before[before.index(postfix.LOCAL_DESTINATIONS) + 1 :]
    if between:
        findings.append(
            Finding(
                "postfix.position",
                WARNING,
                f"{where}: {postfix.LOCAL_DESTINATIONS} comes before {', '.join(between)}:"
                " inbound mail is accepted before they apply",
                f"put {postfix.LOCAL_DESTINATIONS} directly before check_policy_service",
            )
        )
    if context != RELAY_CONTEXT:
        findings.append(
            Finding(
                "postfix.legacy",
                WARNING,
                f"{where}: check_policy_service lacks policy_context={RELAY_CONTEXT}: a relay"
                " right after its login may bounce",
                f"write it as {postfix.restriction()}",
            )
        )
    return findings


def _policy(item: Restriction) -> bool:
    return item.name == "check_policy_service"


def instances(host: Host) -> list[tuple[str, str]]:
    """(name, config directory) of each Postfix instance; the default alone without postmulti."""
    status, output = host.run(["postmulti", "-l"])
    found = []
    if status == 0:
        for line in output.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "y":
                found.append((fields[0], fields[3]))
    return found or [("-", "/etc/postfix")]


def check(config: Config, host: Host) -> Iterator[Finding]:
    """Every smtpd of every Postfix instance, main.cf and master.cf's overrides."""
    listening = policy_listeners(host)
    several = len(instances(host)) > 1
    for name, directory in instances(host):
        base = ["postconf", "-c", directory]
        label = f"{name} " if several else ""
        status, output = host.run([*base, "-x", RELAY, RECIPIENT, "queue_directory"])
        if status != 0:
            yield Finding(
                "postfix.config",
                UNKNOWN,
                f"{label}postconf failed (status {status}): is Postfix installed?",
                "apt install postfix",
            )
            continue
        main = parameters(output)
        queue = main.get("queue_directory", "/var/spool/postfix")
        _, services = host.run([*base, "-P", "-x"])
        _, chroots = host.run([*base, "-F", "*/*/chroot"])
        chrooted = {
            key.rsplit("/", 1)[0]: value == "y" for key, value in parameters(chroots).items()
        }
        overrides: dict[str, dict[str, str]] = {}
        for key, value in parameters(services).items():
            service, _, parameter = key.rpartition("/")
            if parameter in (RELAY, RECIPIENT):
                overrides.setdefault(service, {})[parameter] = value
        smtpd = {"smtp/inet": main, **{service: {**main, **o} for service, o in overrides.items()}}
        for service, settings in smtpd.items():
            where = f"{label}main.cf" if service == "smtp/inet" else f"{label}master.cf {service}"
            yield from analyse(
                where,
                settings.get(RELAY, ""),
                settings.get(RECIPIENT, ""),
                queue,
                chrooted.get(service, True),
                listening,
            )
