"""One normal form for every client address, shared by grant, lookup and login."""

import pytest

from pbs_activated.addresses import InvalidAddress, is_local, normalize


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("192.0.2.10", "192.0.2.10"),
        (" 192.0.2.10\n", "192.0.2.10"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::FFFF:c000:0207", "192.0.2.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[::ffff:192.0.2.7]", "192.0.2.7"),
    ],
)
def test_addresses_are_normalised_to_one_form(given: str, normal: str) -> None:
    assert normalize(given) == normal


@pytest.mark.parametrize(
    "given",
    [
        "",
        "unknown",
        "localhost",
        "192.0.2",
        "192.0.2.256",
        "01.2.3.4",
        "192.0.2.1/24",
        "2001:db8::1%eth0",
        "2001:db8:::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "239.1.2.3",
        "255.255.255.255",
        "240.0.0.1",
        "ff02::1",
        "::ffff:0.0.0.0",
        "192.0.2.1\x00",
        "192.0.2.1, 192.0.2.2",
    ],
)
def test_anything_but_a_unicast_address_is_refused(given: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize(given)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1", "169.254.1.1", "fe80::1"])
def test_loopback_and_link_local_are_local(address: str) -> None:
    assert is_local(normalize(address))


@pytest.mark.parametrize("address", ["192.0.2.1", "10.0.0.1", "2001:db8::1", "fec0::1"])
def test_other_unicast_addresses_are_not_local(address: str) -> None:
    assert not is_local(normalize(address))
