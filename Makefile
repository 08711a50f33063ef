# pbs-activated: the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs itself on a fresh Debian 12 (as root).

# Debian's Python and Debian's python3-redis/python3-systemd: a python3 from another
# prefix first on PATH (pyenv, /usr/local) would test against other versions and
# breaks pybuild.
export PATH := /usr/sbin:/usr/bin:/sbin:/bin
PYTHON := /usr/bin/python3
VENV := .venv
PYTEST := $(PYTHON) -m pytest

RUNTIME_PACKAGES := python3 python3-redis python3-systemd
TEST_PACKAGES := $(RUNTIME_PACKAGES) redis-server redis-sentinel python3-pytest \
	python3-hypothesis python3-venv systemd systemd-journal-remote systemd-container \
	debootstrap iproute2
BENCH_PACKAGES := $(TEST_PACKAGES) nodejs npm procps

.PHONY: all test unit integration system lint deb demo bench soak clean deps

all: test

deps:
	.ci/ensure-packages $(TEST_PACKAGES)

# Development tools that Debian 12 lacks or ships too old (ruff, a current mypy),
# in a virtualenv that sees Debian's redis and systemd modules.
$(VENV)/.stamp: Makefile
	.ci/ensure-packages python3-venv
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check ruff==0.8.4 mypy==1.13.0
	touch $@

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check pbs_activated tests bench
	$(VENV)/bin/ruff format --check pbs_activated
	$(VENV)/bin/mypy

unit: deps
	$(PYTEST) -q tests/unit

integration: deps
	$(PYTEST) -q tests/integration

system: deps deb
	$(PYTEST) -q tests/system

test: deps lint
	$(PYTEST) -q tests

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
