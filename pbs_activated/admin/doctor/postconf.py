"""What `postconf` prints, read as Postfix reads it: parameters and restriction lists.

doctor.postfix judges the lists; this module only splits them, so the rules
Postfix applies to its own syntax (commas or white space between elements, a
`{ ... }` group as one) have one home and tests of their own.
"""

from __future__ import annotations

from typing import NamedTuple


class Restriction(NamedTuple):
    """One element of a restriction list: its name and, for a policy service, its settings."""

    name: str
    service: str = ""
    options: tuple[tuple[str, str], ...] = ()


def tokens(text: str) -> list[str]:
    """Split a Postfix list as Postfix does: commas and white space, `{ ... }` one token."""
    found: list[str] = []
    current = ""
    depth = 0
    for character in text:
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
        if depth == 0 and character in ", \t\r\n":
            if current:
                found.append(current)
            current = ""
            continue
        current += character
    if current:
        found.append(current)
    return found


def restrictions(text: str) -> list[Restriction]:
    """A restriction list's elements; check_policy_service takes the token after it."""
    parsed: list[Restriction] = []
    words = tokens(text)
    index = 0
    while index < len(words):
        word = words[index]
        if word == "check_policy_service" and index + 1 < len(words):
            argument = words[index + 1]
            index += 1
            if argument.startswith("{"):
                parts = [part.strip() for part in argument.strip("{} \t").split(",")]
                options = tuple(
                    (name.strip(), value.strip())
                    for name, _, value in (part.partition("=") for part in parts[1:] if part)
                )
                parsed.append(Restriction(word, parts[0], options))
            else:
                parsed.append(Restriction(word, argument))
        else:
            parsed.append(Restriction(word))
        index += 1
    return parsed


def parameters(text: str) -> dict[str, str]:
    """`name = value` lines of postconf as a dict."""
    found = {}
    for line in text.splitlines():
        name, equals, value = line.partition(" = ")
        if equals:
            found[name.strip()] = value.strip()
        elif line.endswith(" ="):
            found[line[:-2].strip()] = ""
    return found
