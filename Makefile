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
# Debian's own QA tools for the host's release (tests/packaging/test_piuparts.py; dpkg-dev
# for the local repository of the previous version). The other release's piuparts runs in
# a cached root of that release, and autopkgtest inside the booted test containers.
QA_PACKAGES := piuparts adequate dpkg-dev
TEST_PACKAGES := $(RUNTIME_PACKAGES) redis-server redis-sentinel python3-pytest \
	python3-hypothesis python3-venv systemd systemd-journal-remote systemd-container \
	debootstrap iproute2 openssl python3-hiredis $(QA_PACKAGES)
# npm separately: NodeSource's nodejs bundles it and conflicts with Debian's npm.
BENCH_PACKAGES := python3 redis-server systemd nodejs python3-hiredis
# Build dependencies of packaging/debian/control, plus what the package's checks run.
PACKAGING_PACKAGES := build-essential dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools lintian man-db systemd

.PHONY: all test unit integration system lint deb demo bench bench-ab bench-booted bench-directives bench-postfix soak \
	soak-server clean deps

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

# The DEP-8 tests are Python scripts without a .py name: named one by one.
DEP8_SCRIPTS := $(filter-out %/control,$(wildcard packaging/debian/tests/*))

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check pbs_activated tests bench $(DEP8_SCRIPTS)
	$(VENV)/bin/ruff format --check pbs_activated tests $(DEP8_SCRIPTS)
	$(VENV)/bin/mypy

unit: deps
	$(PYTEST) -q tests/unit

integration: deps
	$(PYTEST) -q tests/integration

system: deps deb
	$(PYTEST) -q tests/system

# The README's first command: the .deb in a throwaway booted Debian, narrated:
# trixie (today's stable) by default, `make demo RELEASE=bookworm` the other.
# demo.py runs `make deb` itself, quietly: its build log would bury the story.
demo: deps
	$(PYTHON) tests/system/demo.py $(if $(RELEASE),--release $(RELEASE))

# The reader and the CLI run redis-py, whose behaviour changed between Debian 12's
# 4.3 and Debian 13's 6.1: their integration tests run again with the other
# release's (tests/redispy.py makes its virtualenv once, from PyPI).
OTHER_REDIS_PY_TESTS := tests/integration/admin/test_cli.py tests/integration/reader/test_journal_reader.py \
	tests/integration/reader/test_journal_faults.py tests/integration/admin/test_migrate.py \
	tests/integration/store/test_cluster_writes.py tests/integration/store/test_store_acl.py

test: deps lint
	$(PYTEST) -q tests
	PBS_TEST_REDIS_PY=other $(PYTEST) -q $(OTHER_REDIS_PY_TESTS)

# The version has one home, pyproject.toml; debian/changelog must say the same.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DEB := dist/pbs-activated_$(VERSION)_all.deb
# The tree to package: git's view of it (tracked and new files, not ignored ones), or
# without git (an unpacked tarball) every file but the build products.
SOURCE_FILES := { git ls-files -z --cached --others --exclude-standard 2>/dev/null \
	|| find . \( -path ./build -o -path ./dist -o -path ./.venv -o -path ./.git \) -prune \
	-o -type f -print0; }
SOURCES := $(wildcard $(shell $(SOURCE_FILES) | tr '\0' '\n'))

deb: $(DEB)

# dpkg-buildpackage wants debian/ at the top of the source tree: build in a copy of
# the working tree with packaging/debian as its debian/, so the checkout stays clean. Rebuilt only when a source file changed;
# each build has its own directory and the result is renamed into place, so two
# builds at once (make test beside make demo) never see each other's half.
$(DEB): $(SOURCES)
	.ci/ensure-packages $(PACKAGING_PACKAGES)
	test "$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)" = "$(VERSION)" \
		|| { echo "packaging/debian/changelog does not say $(VERSION)" >&2; exit 1; }
	mkdir -p build dist
	set -e; work=$$(mktemp -d build/deb.XXXXXX); trap 'rm -rf "$$work"' EXIT; \
	mkdir "$$work/src"; \
	$(SOURCE_FILES) | tar --null --ignore-failed-read -T - -cf - 2>/dev/null \
		| tar -xf - -C "$$work/src"; \
	cp -r packaging/debian "$$work/src/debian"; \
	(cd "$$work/src" && dpkg-buildpackage --build=binary --no-sign); \
	mv "$$work/pbs-activated_$(VERSION)_all.deb" $@.$$$$; \
	mv $@.$$$$ $@

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

# Issue #5's figures: our handler against the interpreter's floor and the 2010
# node.js server (extracted from ../shared/seed at run time, never committed).
bench:
	.ci/ensure-packages $(BENCH_PACKAGES)
	command -v npm >/dev/null || .ci/ensure-packages npm
	$(PYTHON) bench/run.py
	$(PYTHON) bench/store_durability.py
	$(PYTHON) bench/codec.py
	$(PYTHON) bench/config_refresh.py
	@echo "Through the installed units on booted Debian 12 and 13 (as root, minutes):"
	@echo "make bench-booted, make bench-directives, make bench-postfix"

# The handler's start-up, 64 at once and RSS at two revisions, in one paired A/B run
# (shuffled starts, paired differences): `make bench-ab A=REV [B=REV]`, B by default
# the working tree. For a change that must not make the handler's start worse.
bench-ab:
	.ci/ensure-packages python3 redis-server systemd git
	$(PYTHON) bench/startup_ab.py $(if $(A),--a $(A)) $(if $(B),--b $(B)) --rss

# Issue #23: the handler and the server as systemd starts them, beside a bare
# interpreter's unit, in booted Debian 12 and 13 (the system tests' containers).
bench-booted: deps
	$(PYTHON) bench/booted_units.py

# bench-ab through the installed unit in booted Debian 12 and 13: A=REV (953cf05) vs the .deb.
.PHONY: bench-booted-ab
bench-booted-ab: deps
	$(PYTHON) bench/booted_ab.py $(if $(A),--a $(A))

# The same, per sandbox directive of pbs-policy@.service (docs/performance.md's table).
bench-directives: deps
	$(PYTHON) bench/booted_units.py --directives --held 2

# Postfix's smtp-source through no policy service, the handler and the server.
bench-postfix: deps
	$(PYTHON) bench/booted_postfix.py

# 100 Postfix-like connections for 60 s: no errors, no leftovers, flat memory.
soak:
	.ci/ensure-packages $(BENCH_PACKAGES)
	$(PYTHON) bench/soak.py

# The same against the Accept=no server: one process, flat memory, no descriptor kept.
soak-server:
	.ci/ensure-packages $(BENCH_PACKAGES)
	$(PYTHON) bench/soak.py --server
