"""Client addresses: one normal form, shared by the handler, the reader and the CLI.

An address granted as `2001:DB8::0:1` must be found when Postfix asks for
`2001:db8::1`, and a Courier login from `::ffff:192.0.2.7` must match Postfix's
`192.0.2.7`; so every address passes through `normalize` before it becomes a key.

Built on `_socket.inet_pton`/`inet_ntop` (the C half of `socket`) rather than
`ipaddress`, because the policy handler imports this on every connection and
`ipaddress` or `socket` cost milliseconds of imports.
"""

from __future__ import annotations

import _socket

_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


class InvalidAddress(ValueError):
    """The text is not an IPv4 or IPv6 unicast address."""


def normalize(text: str) -> str:
    """Return the canonical form of a unicast IP address, or raise InvalidAddress.

    IPv6 comes out in RFC 5952 form (lower case, longest zero run compressed);
    IPv4-mapped IPv6 (`::ffff:a.b.c.d`) comes out as the IPv4 address.
    Multicast, broadcast, reserved and unspecified addresses are refused: no
    client can connect from them, so a key for one is an error somewhere.
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        if ":" in candidate:
            packed = _socket.inet_pton(_socket.AF_INET6, candidate)
            if packed.startswith(_MAPPED_PREFIX):
                packed = packed[12:]
        else:
            packed = _socket.inet_pton(_socket.AF_INET, candidate)
    except (OSError, ValueError):
        raise InvalidAddress(f"not an IP address: {text!r}") from None
    if not _is_unicast(packed):
        raise InvalidAddress(f"not a unicast address: {text!r}")
    family = _socket.AF_INET if len(packed) == 4 else _socket.AF_INET6
    return _socket.inet_ntop(family, packed)


def normalize_or_none(text: str) -> str | None:
    """`normalize`, with None for what is not a unicast address."""
    try:
        return normalize(text)
    except InvalidAddress:
        return None


def _is_unicast(packed: bytes) -> bool:
    """Tell whether a packed address can be a client's source address."""
    if len(packed) == 4:
        first = packed[0]
        # 0.0.0.0/8 "this network", 224.0.0.0/4 multicast, 240.0.0.0/4 reserved + broadcast
        return first != 0 and first < 224
    # :: unspecified, ff00::/8 multicast
    return packed != bytes(16) and packed[0] != 0xFF


def is_local(address: str) -> bool:
    """Tell whether a normalised address is loopback or link-local.

    Such an address is never a remote mail client: a login from one (webmail on
    the same host, a local proxy) must never open relaying.
    """
    if ":" in address:
        packed = _socket.inet_pton(_socket.AF_INET6, address)
        return packed == bytes(15) + b"\x01" or (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80)
    packed = _socket.inet_pton(_socket.AF_INET, address)
    return packed[0] == 127 or packed[:2] == b"\xa9\xfe"
