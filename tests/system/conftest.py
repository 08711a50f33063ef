"""Fixtures for system tests: booted Debian mail hosts, with and without the product.

Why session scope: a boot plus mail-host setup costs seconds; the tests share a
container and leave it as they found it (or use addresses no other test uses).
Two containers per target: `mail_host` never has pbs-activated (the harness smoke
test checks Postfix's answer without a policy service), `product_host` has the
.deb installed.

Targets and tiers: every test that uses a host runs once per selected target
(`test_x[trixie+valkey]`). A target's tier says which tests: `full` runs them
all, `smoke` only those marked `pytest.mark.smoke`. By default bookworm+redis and
trixie+redis are full, and trixie+valkey and the Courier and Cyrus targets
(bookworm+courier, trixie+courier, bookworm+cyrus, trixie+cyrus: test_servers.py
only, through `server_target`) are smoke, which keeps `make test` well inside its
hour on two cores; `PBS_TEST_TARGETS` picks others (see README.md):

    PBS_TEST_TARGETS=trixie+valkey            # that target alone, in its default tier
    PBS_TEST_TARGETS="trixie+valkey:full"     # every test on it
    PBS_TEST_TARGETS="bookworm+redis upgrade" # one target and the dist-upgrade test
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import (
    DOVECOT,
    FULL,
    TARGETS,
    Container,
    Target,
    missing_requirements,
    selected_targets,
)
from mailhost import configure_mail_host
from product import AddressPool, BuildFailed, build_deb, install_product


def system_test_skip_reason() -> str | None:
    """Why system tests cannot run here, or None when they can."""
    return missing_requirements()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "after_all: runs after every other test of its target (checks its logs)"
    )
    config.addinivalue_line(
        "markers",
        "deliberate_faults: breaks the policy service on purpose (test_faults, test_doctor):"
        " runs after after_all, whose log checks must not see those faults",
    )
    config.addinivalue_line(
        "markers", "smoke: runs on every target, smoke-tier ones too (see conftest.py)"
    )
    config.addinivalue_line(
        "markers", "dist_upgrade: the bookworm-to-trixie upgrade (PBS_TEST_TARGETS `upgrade`)"
    )


TARGET_FIXTURES = ("target", "server_target")
"""`target`: a Dovecot target, for every test of mailhost.py's host; `server_target`:
a Courier or Cyrus target, for test_servers.py's (serverhost.py's host)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a host once per target of its tier (and of its server)."""
    for fixture in TARGET_FIXTURES:
        if fixture not in metafunc.fixturenames:
            continue
        tiers, _ = selected_targets()
        smoke = metafunc.definition.get_closest_marker("smoke") is not None
        names = [
            name
            for name, tier in tiers.items()
            if (tier == FULL or smoke)
            and (TARGETS[name].server is DOVECOT) == (fixture == "target")
        ]
        # The Target objects of TARGETS, never equal copies: pytest 7 keeps a session
        # fixture only while the next test's parameter *is* the cached one (`is`).
        targets = [TARGETS[name] for name in names]
        metafunc.parametrize(fixture, targets, indirect=True, scope="session", ids=names)


def target_of(item: pytest.Item) -> str | None:
    """The target a collected test runs on, None for tests without one (or with none
    in their tier: pytest's placeholder for an empty parameter set is not a name)."""
    callspec = getattr(item, "callspec", None)
    for fixture in TARGET_FIXTURES:
        target = None if callspec is None else callspec.params.get(fixture)
        if isinstance(target, Target):
            return target.name
    return None


def outside_every_tier(item: pytest.Item) -> bool:
    """A test that needs a host, none of whose selected targets' tiers includes it
    (or the dist-upgrade test when PBS_TEST_TARGETS does not name `upgrade`)."""
    if item.get_closest_marker("dist_upgrade") is not None:
        return not selected_targets()[1]
    fixtures = getattr(item, "fixturenames", ())
    return any(name in fixtures for name in TARGET_FIXTURES) and target_of(item) is None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop tests outside every tier; run one target after the other, each ending
    with its after_all tests.

    Only the slots of tests with a target are reordered (unit, integration and
    packaging tests keep their places). A target's hosts are torn down when the
    next target's tests begin, so its tests must not be interleaved with another's.
    """
    deselected = [item for item in items if outside_every_tier(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not outside_every_tier(item)]
    order = {name: index for index, name in enumerate(TARGETS)}
    slots = [index for index, item in enumerate(items) if target_of(item) is not None]
    ordered = sorted(
        (items[index] for index in slots),
        key=lambda item: (order[str(target_of(item))], phase(item)),
    )
    for index, item in zip(slots, ordered, strict=True):
        items[index] = item


SERVICE_STATE = (
    "systemctl --no-pager status pbs-journal.service pbs-store.service pbs-policy.socket;"
    " journalctl --no-pager -o short-precise -n 60"
    " -u pbs-journal.service -u pbs-store.service -u 'pbs-policy@*'"
)
"""What a failed system test's report shows of the product host: the services' state and
their last journal lines (a reader restarting is otherwise gone with the container)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    host = getattr(item, "funcargs", {}).get("product_host")
    if report.when == "call" and report.failed and isinstance(host, Container):
        shown = host.run(SERVICE_STATE, check=False, timeout=60)
        report.sections.append(("product host services", shown.stdout + shown.stderr))


def phase(item: pytest.Item) -> int:
    """A target's tests in three phases: the ordinary ones, after_all's checks of their
    logs, then the tests that break the service on purpose (their warnings are wanted)."""
    if item.get_closest_marker("deliberate_faults") is not None:
        return 2
    return 1 if item.get_closest_marker("after_all") is not None else 0


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The release and store of this run of the test (parametrized by pytest_generate_tests)."""
    reason = system_test_skip_reason()
    if reason:
        pytest.skip(reason)
    target: Target = request.param
    return target


@pytest.fixture(scope="session")
def server_target(request: pytest.FixtureRequest) -> Target:
    """A Courier or Cyrus target (parametrized by pytest_generate_tests)."""
    reason = system_test_skip_reason()
    if reason:
        pytest.skip(reason)
    target: Target = request.param
    return target


@pytest.fixture(scope="session")
def mail_host(target: Target) -> Iterator[Container]:
    """A booted container of the target configured by mailhost.configure_mail_host."""
    logging.getLogger("pbs.system").setLevel(logging.INFO)
    with Container(target) as ct:
        configure_mail_host(ct)
        yield ct


DEB_VARIABLE = "PBS_TEST_DEB"
"""A .deb to test instead of building the working tree's (e.g. one built elsewhere)."""


@pytest.fixture(scope="session")
def deb() -> Path:
    """dist/pbs-activated_<version>_all.deb, rebuilt by `make deb` if a source is newer
    (or the package PBS_TEST_DEB names, as it is)."""
    reason = system_test_skip_reason()
    if reason:
        pytest.skip(reason)
    if os.environ.get(DEB_VARIABLE):
        return Path(os.environ[DEB_VARIABLE]).resolve()
    try:
        return build_deb()
    except BuildFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def product_host(deb: Path, target: Target) -> Iterator[Container]:
    """A mail host with the .deb apt-installed, its units running, and Postfix asking
    `check_policy_service unix:private/pbs-policy` before reject_unauth_destination."""
    logging.getLogger("pbs.system").setLevel(logging.INFO)
    with Container(target) as ct:
        configure_mail_host(ct)
        install_product(ct, deb)
        yield ct


@pytest.fixture(scope="session")
def addresses(target: Target) -> AddressPool:
    """Client addresses, each handed out once per target's session."""
    return AddressPool()
