"""Fixtures for system tests: booted Debian 12 mail hosts, with and without the product.

Why session scope: a boot plus mail-host setup costs seconds; the tests share a
container and leave it as they found it (or use addresses no other test uses).
Two containers: `mail_host` never has pbs-activated (the harness smoke test
checks Postfix's answer without a policy service), `product_host` has the
.deb installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, missing_requirements
from mailhost import configure_mail_host
from product import AddressPool, BuildFailed, build_deb, install_product


def system_test_skip_reason() -> str | None:
    """Why system tests cannot run here, or None when they can."""
    return missing_requirements()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "after_all: runs after every other test (checks the whole session's logs)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move tests marked after_all to the end, keeping the order of the rest."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


@pytest.fixture(scope="session")
def mail_host() -> Iterator[Container]:
    """A booted Debian 12 container configured by mailhost.configure_mail_host."""
    reason = system_test_skip_reason()
    if reason:
        pytest.skip(reason)
    logging.getLogger("pbs.system").setLevel(logging.INFO)
    with Container() as ct:
        configure_mail_host(ct)
        yield ct


@pytest.fixture(scope="session")
def deb() -> Path:
    """dist/pbs-activated_<version>_all.deb, rebuilt by `make deb` if a source is newer."""
    reason = system_test_skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        return build_deb()
    except BuildFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def product_host(deb: Path) -> Iterator[Container]:
    """A mail host with the .deb apt-installed, its units running, and Postfix asking
    `check_policy_service unix:private/pbs-policy` before reject_unauth_destination."""
    logging.getLogger("pbs.system").setLevel(logging.INFO)
    with Container() as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        yield ct


@pytest.fixture(scope="session")
def addresses() -> AddressPool:
    """Client addresses, each handed out once per session."""
    return AddressPool()
