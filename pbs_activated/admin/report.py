"""`pbs-activated report`: what the journal says happened, summed up for an auditor.

From the entries we already write (pbs-activated(8), AUDIT) and Postfix's own
reject lines, for a period in journalctl's syntax: per user and per address the
logins taken, the relays allowed (recipients answered OK), the relays refused
(Postfix's "Relay access denied", since our answer there is DUNNO and the
refusal is Postfix's), and the answers given while the store was unavailable;
and the busiest hours.

Only entries from our own units count as ours (journald's trusted
`_SYSTEMD_UNIT`): a line forged with `logger -t pbs-activated` from a shell is
not a login or a relay here any more than it is to the reader. journalctl does
the selection and the reading (`-o export`, the fields we use only); this module
parses its stream, so it runs at close to journalctl's own speed
(bench/report_bench.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator

IDENTIFIERS = ("pbs-activated", "postfix/smtpd", "postfix/submission/smtpd", "postfix/smtps/smtpd")
"""The SYSLOG_IDENTIFIERs read: ours, and the smtpd of Debian's master.cf services."""

FIELDS = (
    "MESSAGE",
    "SYSLOG_IDENTIFIER",
    "_SYSTEMD_UNIT",
    "PBS_EVENT",
    "PBS_ACTION",
    "PBS_USER",
    "PBS_CLIENT_ADDRESS",
    "PBS_PROTOCOL_STATE",
)

READER_UNIT = "pbs-journal.service"
COUNTS = ("logins", "relays", "refused", "unavailable")

_REJECT = re.compile(r"reject: RCPT from [^\[]*\[([^\]]+)\]:.*Relay access denied")


class Report:
    """The sums: per user and per address, each a Counter of COUNTS, and per hour."""

    def __init__(self) -> None:
        self.users: dict[str, Counter[str]] = {}
        self.addresses: dict[str, Counter[str]] = {}
        self.hours: Counter[str] = Counter()
        self.entries = 0

    def count(self, what: str, user: str, address: str, realtime_us: int) -> None:
        if user:
            self.users.setdefault(user, Counter())[what] += 1
        if address:
            self.addresses.setdefault(address, Counter())[what] += 1
        self.hours[time.strftime("%Y-%m-%d %H:00", time.localtime(realtime_us / 1e6))] += 1

    def add(self, entry: dict[str, str]) -> None:
        """Count one journal entry (export fields) if it is one of ours or a Postfix refusal."""
        self.entries += 1
        unit = entry.get("_SYSTEMD_UNIT", "")
        at = int(entry.get("__REALTIME_TIMESTAMP", "0") or 0)
        if entry.get("SYSLOG_IDENTIFIER") != "pbs-activated":
            found = _REJECT.search(entry.get("MESSAGE", ""))
            if found and unit.startswith("postfix"):
                self.count("refused", "", _address(found[1]), at)
            return
        user = entry.get("PBS_USER", "")
        address = entry.get("PBS_CLIENT_ADDRESS", "")
        if entry.get("PBS_EVENT") == "login":
            if unit == READER_UNIT:
                self.count("logins", user, address, at)
            return
        if not _policy_unit(unit) or entry.get("PBS_PROTOCOL_STATE") != "RCPT":
            return
        action = entry.get("PBS_ACTION")
        if action == "OK":
            self.count("relays", user, address, at)
        elif action == "DEFER_IF_REJECT":
            self.count("unavailable", user, address, at)

    def as_dict(self, busiest: int = 5) -> dict[str, object]:
        """The JSON form: every count per user and address, the busiest hours first."""

        def table(rows: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
            return {key: {what: rows[key][what] for what in COUNTS} for key in sorted(rows)}

        return {
            "entries": self.entries,
            "users": table(self.users),
            "addresses": table(self.addresses),
            "busiest_hours": [
                {"hour": hour, "events": events} for hour, events in self.hours.most_common(busiest)
            ],
        }


def _policy_unit(unit: str) -> bool:
    return unit.startswith("pbs-policy@") or unit == "pbs-policy-server.service"


def _address(text: str) -> str:
    """Postfix writes IPv6 as `IPv6:` nowhere in the bracket of a client, but maps IPv4."""
    return text.removeprefix("::ffff:")


def parse_export(stream: Iterable[bytes]) -> Iterator[dict[str, str]]:
    """journalctl -o export's entries, line by line (binary fields included)."""
    lines = iter(stream)
    entry: dict[str, str] = {}
    for line in lines:
        if line == b"\n":
            if entry:
                yield entry
            entry = {}
            continue
        name, equals, value = line.partition(b"=")
        if equals:
            entry[name.decode("ascii", "replace")] = value[:-1].decode("utf-8", "replace")
            continue
        # A binary field: its name alone, then a 64-bit little-endian length and the data.
        data = b""
        for more in lines:
            data += more
            if len(data) >= 8 and len(data) >= 8 + int.from_bytes(data[:8], "little") + 1:
                break
        size = int.from_bytes(data[:8], "little")
        entry[name.strip().decode("ascii", "replace")] = data[8 : 8 + size].decode(
            "utf-8", "replace"
        )
    if entry:
        yield entry


def journalctl_command(since: str, until: str, directory: str = "") -> list[str]:
    """The journalctl that selects our entries and Postfix's for the period."""
    command = ["journalctl", "--no-pager", "-o", "export", f"--output-fields={','.join(FIELDS)}"]
    command += [f"--since={since}"] if since else []
    command += [f"--until={until}"] if until else []
    command += [f"--directory={directory}"] if directory else []
    return command + [f"SYSLOG_IDENTIFIER={identifier}" for identifier in IDENTIFIERS]


def collect(since: str, until: str, directory: str = "") -> Report:
    """Run journalctl and sum its entries; OSError or ValueError when it fails."""
    report = Report()
    with subprocess.Popen(
        journalctl_command(since, until, directory),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        for entry in parse_export(process.stdout):
            report.add(entry)
        error = process.stderr.read().decode("utf-8", "replace").strip() if process.stderr else ""
    if process.returncode != 0:
        raise ValueError(f"journalctl failed: {error or process.returncode}")
    return report


def render_text(report: Report) -> str:
    """Plain tables a person reads in a terminal: users, addresses, busiest hours."""
    out = []
    for title, rows in (("user", report.users), ("address", report.addresses)):
        out.append(f"{title:<40} {'logins':>7} {'relays':>7} {'refused':>7} {'unavail':>7}")
        for key in sorted(rows):
            counts = rows[key]
            out.append(f"{key:<40} " + " ".join(f"{counts[what]:>7}" for what in COUNTS))
        out.append("")
    out.append("busiest hours")
    out += [f"{hour}  {events}" for hour, events in report.hours.most_common(5)]
    return "\n".join(out) + "\n"


def run(since: str, until: str, as_json: bool = False, directory: str = "") -> int:
    """Print the report; 1 when the journal cannot be read."""
    try:
        report = collect(since, until, directory)
    except (OSError, ValueError) as error:
        print(f"pbs-activated: report: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(
        json.dumps(report.as_dict(), indent=1) + "\n" if as_json else render_text(report)
    )
    return 0
