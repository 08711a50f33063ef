"""Fixtures for system tests: one booted, configured mail-host container per session.

Why session scope: a boot plus mail-host setup costs seconds; the product's
system tests should share one container and clean up what they change.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import pytest
from container import Container
from mailhost import configure_mail_host

REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "unshare", "nsenter", "setpriv")


def system_test_skip_reason() -> str | None:
    """Why system tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root (systemd-nspawn, mounts, namespaces)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"system tests need {', '.join(missing)}"
            " (apt-get install systemd-container debootstrap util-linux)"
        )
    return None


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
