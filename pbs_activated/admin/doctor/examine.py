"""`pbs-activated doctor`: the whole chain on this host checked, one finding per check.

A POP-before-SMTP setup fails silently: a Postfix line in the wrong place makes
an open relay or a useless service, a mail server's new log format authorizes
nobody, journald drops logins under its rate limit, a drifting clock shortens
lifetimes. Each check family is a module (doctor.postfix, doctor.systemd,
doctor.logs, doctor.store); this one runs them and prints what they found.

Every finding is `ok`, `warning`, `error` or `unknown` (a check that could not
be made says so instead of guessing), with the fix in one sentence. The exit
status follows the monitoring-plugin convention: 0 all ok, 1 a warning, 2 an
error, 3 a check unknown and no error (an error outranks what could not be
known). The checks run the tools a Debian administrator would (`postconf`,
`systemctl`, `journalctl`, `timedatectl`), through a `Host` the tests replace.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable

from pbs_activated.admin.doctor.findings import (
    ERROR,
    EXIT_STATUS,
    OK,
    UNKNOWN,
    WARNING,
    Finding,
    Host,
)
from pbs_activated.config import Config

Check = Callable[[Config, Host], Iterable[Finding]]


def checks() -> list[Check]:
    """Every check family, in the order a relay decision depends on them."""
    from pbs_activated.admin.doctor import logs, postfix, store, systemd

    return [
        postfix.check,
        systemd.check,
        logs.check,
        logs.check_journald,
        store.check,
        store.check_time,
    ]


def examine(config: Config, host: Host, families: Iterable[Check] | None = None) -> list[Finding]:
    """Run every check; a check that fails unexpectedly is `unknown`, not a crash."""
    findings: list[Finding] = []
    for family in checks() if families is None else families:
        try:
            findings.extend(family(config, host))
        except (OSError, ValueError) as error:
            name = getattr(family, "__module__", "doctor").removeprefix("pbs_activated.doctor_")
            findings.append(Finding(name, UNKNOWN, f"the check failed: {error}"))
    return findings


def exit_status(findings: Iterable[Finding]) -> int:
    """2 for any error, else 3 for any unknown, else 1 for any warning, else 0."""
    found = {finding.status for finding in findings}
    for status in (ERROR, UNKNOWN, WARNING):
        if status in found:
            return EXIT_STATUS[status]
    return 0


def render_text(findings: Iterable[Finding]) -> str:
    """One line per check: status, check, what was found; the fix indented below."""
    lines = []
    for finding in findings:
        lines.append(f"{finding.status:<8} {finding.check}: {finding.message}")
        if finding.fix and finding.status != OK:
            lines.append(f"         fix: {finding.fix}")
    return "\n".join(lines) + "\n"


def render_json(findings: Iterable[Finding]) -> str:
    """A JSON object: the exit status and every finding with its four fields."""
    listed = list(findings)
    return json.dumps(
        {"status": exit_status(listed), "findings": [finding._asdict() for finding in listed]},
        indent=1,
    )


def run(config: Config, as_json: bool = False, host: Host | None = None) -> int:
    """Print the findings and return the exit status (the caller checked the privileges)."""
    findings = examine(config, host or Host())
    sys.stdout.write(render_json(findings) + "\n" if as_json else render_text(findings))
    return exit_status(findings)
