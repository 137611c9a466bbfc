# echod developer tasks. `make run` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# Bookworm's own interpreter and packages: the versions the .deb runs on,
# the systemd tools the tests drive (systemd-socket-activate, systemd-analyze),
# and haproxy with iproute2 for echod behind a balancer on hosts in network namespaces.
# socat and openbsd-inetd are echo servers `echod probe` is tested against, and
# nftables makes the random loss it must measure. Installing openbsd-inetd starts
# no inetd here: without systemd, invoke-rc.d starts nothing in an unknown
# runlevel (a container) and its init script refuses while /etc/inetd.conf
# enables no service, which the file the package creates does not; under
# systemd, inetd.service runs with that file and listens on nothing. The tests
# run their own inetd, in a network namespace of their own.
SYSTEM_PYTHON ?= /usr/bin/python3
# prometheus: its promtool checks the metrics and the shipped alerting rules.
# python3-scapy: its scapy.contrib.stamp is the independent STAMP codec echod's is tested against
# (bookworm's 2.5.0 has it, read through a UDP header: tests/stamp/test_against_scapy.py). adjtimex:
# Debian's adjtimex(8), whose --print the clock state echod reads is compared with; installing it
# changes no clock (its unit runs only once /etc/default/adjtimex exists, which nothing writes).
SYSTEM_TEST_PACKAGES := python3-twisted python3-sdnotify python3-prometheus-client python3-pytest \
	python3-hypothesis python3-scapy adjtimex systemd prometheus haproxy iproute2 socat openbsd-inetd \
	nftables monitoring-plugins-basic
PYTEST_ARGS ?=

RUN_DIR := .run
RUN_PORT ?= 7007
# RUN_UDP=yes: `make run` serves the shipped file's UDP echo too, on $(RUN_PORT).
RUN_UDP ?= no

.PHONY: run test test-venv test-system system-packages lint check-config fuzz clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --editable '.[test,lint]'
	touch $@

venv: $(VENV)/.installed

# The shipped configuration with the privileged echo port moved to $(RUN_PORT),
# the access log kept in $(RUN_DIR) and, with RUN_UDP=yes, the UDP listener
# uncommented. It is made again when etc/echod.conf or these variables change
# (the settings file below records them); edits to it last until then.
RUN_SETTINGS := port=$(RUN_PORT) udp=$(RUN_UDP)
comma := ,
RUN_UNCOMMENT_UDP := $(if $(filter yes,$(RUN_UDP)),-e '/^\#\[listener:udp-echo\]$$/$(comma)$$ s/^\#//')

$(RUN_DIR)/settings: FORCE
	@mkdir -p $(RUN_DIR)
	@[ "$$(cat $@ 2>/dev/null)" = "$(RUN_SETTINGS)" ] || echo "$(RUN_SETTINGS)" > $@

$(RUN_DIR)/echod.conf: etc/echod.conf $(RUN_DIR)/settings
	sed $(RUN_UNCOMMENT_UDP) -e 's/^port = 7$$/port = $(RUN_PORT)/' \
	    -e 's|^access_log = .*|access_log = $(abspath $(RUN_DIR))/access.log|' etc/echod.conf > $@

.PHONY: FORCE
FORCE:

run: $(VENV)/.installed $(RUN_DIR)/echod.conf
	$(VENV_PYTHON) -m echod run -c $(RUN_DIR)/echod.conf

check-config: $(VENV)/.installed
	$(VENV_PYTHON) -m echod check-config -c etc/echod.conf

test: test-venv test-system

# The newest releases from PyPI.
test-venv: $(VENV)/.installed system-packages
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

# Debian's python3 with Debian's python3-twisted (22.4 on bookworm).
test-system: system-packages
	PYTHONPATH=$(CURDIR) $(SYSTEM_PYTHON) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

system-packages:
	@missing=$$(for p in $(SYSTEM_TEST_PACKAGES); do \
		[ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then echo "make: as root, or after 'apt install" $$missing"', test-system can run" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Coverage-guided fuzzing of the bytecount header parser, for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed
	$(VENV_PYTHON) -m pip install --quiet atheris
	mkdir -p build/fuzz-corpus
	PYTHONPATH=$(CURDIR) $(VENV_PYTHON) fuzz/fuzz_header.py -max_total_time=$(FUZZ_SECONDS) build/fuzz-corpus

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(RUN_DIR) build dist *.egg-info .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# -- The Debian package -------------------------------------------------------
# `make deb`: ./echod.deb and ./echod_VERSION_all.deb (as root it installs the
# build dependencies). `make test-package`: that package, installed, upgraded
# and removed in booted Debian 12 (bookworm) and Debian 13 (trixie)
# containers, both releases at once (tests/system; root only); and the unit
# and integration suite on each release's own python3 and python3-twisted.

DEB_VERSION = $(shell awk 'NR == 1 { gsub(/[()]/, "", $$2); print $$2 }' debian/changelog)
PACKAGE_TEST_PACKAGES := mmdebstrap systemd-container zstd python3-pytest

RELEASES := bookworm trixie
UPGRADE_DEB = build/upgrade/echod_$(DEB_VERSION)+systemtest1_all.deb

.PHONY: deb deb-build-deps test-package package-test-packages upgrade-deb

deb: deb-build-deps
	tools/build-deb build/deb
	cp build/deb/echod_$(DEB_VERSION)_all.deb echod_$(DEB_VERSION)_all.deb
	cp echod_$(DEB_VERSION)_all.deb echod.deb

deb-build-deps:
	@if ! PATH=/usr/bin:/bin dpkg-checkbuilddeps 2>/dev/null; then \
		if [ "$$(id -u)" -ne 0 ]; then echo "make: as root, or after 'apt-get build-dep ./', deb can build" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq ./; \
	fi

# The same source with a higher version, for the upgrade tests: built once, for both releases
# (without its build-time tests: the very same source passed them in `make deb`).
upgrade-deb: deb
	rm -rf build/upgrade
	DEB_BUILD_OPTIONS=nocheck tools/build-deb build/upgrade $(DEB_VERSION)+systemtest1 >build/upgrade.log 2>&1 \
		|| { tail -50 build/upgrade.log; exit 1; }

# Each release's booted tests in a process of their own, and the suite on
# trixie's interpreter, all at once (the booted tests mostly wait on their
# containers); each one's output is shown when it is done.
test-package: deb upgrade-deb package-test-packages
	$(MAKE) --no-print-directory -j3 --output-sync=target \
		$(addprefix test-package-,$(RELEASES)) $(addprefix test-on-,$(filter-out bookworm,$(RELEASES)))

# test-package-RELEASE and test-on-RELEASE use the echod.deb `make deb` built (test-package builds it).
test-package-%:
	@test -f echod.deb || { echo "make: no echod.deb; run make deb first" >&2; exit 1; }
	ECHOD_RELEASES=$* ECHOD_DEB=$(CURDIR)/echod.deb ECHOD_UPGRADE_DEB=$(CURDIR)/$(UPGRADE_DEB) \
		$(SYSTEM_PYTHON) -m pytest -p no:cacheprovider tests/system $(PYTEST_ARGS)

# The unit and integration suite on a release's own python3 and Twisted, in
# its root filesystem (bookworm's runs on this host: test-system).
test-on-%:
	@test -f echod.deb || { echo "make: no echod.deb; run make deb first" >&2; exit 1; }
	$(SYSTEM_PYTHON) -m tests.system.on_release $* $(CURDIR)/echod.deb $(PYTEST_ARGS)

package-test-packages:
	@$(MAKE) --no-print-directory system-packages SYSTEM_TEST_PACKAGES="$(PACKAGE_TEST_PACKAGES)"

ifeq ($(shell id -u),0)
test: test-package
else
test: package-tests-skipped
.PHONY: package-tests-skipped
package-tests-skipped:
	@echo "make: SKIPPED test-package (the Debian package in booted containers): it needs root" >&2
endif

# Benchmark: echod against plain Twisted, asyncio, uvloop and a C epoll echo on this machine, over TCP
# and UDP, beside a second identical echod (the A/A pair, this machine's noise), and the round trips
# `echod probe` measures beside a C ping-pong's (README, "Benchmark"); BENCH_QUICK=1 for a short smoke
# run, BENCH_ARGS="--only udp" for the UDP scenarios alone. uvloop is installed into build/bench/pylib
# and put on the path of its own server only: the test virtualenv stays exactly as `make venv` made it.
BENCH_DIR := build/bench
BENCH_CC ?= gcc
BENCH_CFLAGS ?= -O2 -Wall -Wextra
BENCH_ARGS ?=

# BENCH_BASELINE=REF (a commit) also runs echod as it was at REF, from a checkout in build/bench/baseline,
# and reports "echod / echod at REF": what the changes since REF cost, measured in the same run.
BENCH_BASELINE ?=

.PHONY: bench
bench: $(VENV)/.installed $(addprefix $(BENCH_DIR)/,loadgen cecho pingpong udpload udpecho) \
		$(BENCH_DIR)/pylib/.installed
ifneq ($(BENCH_BASELINE),)
	rm -rf $(BENCH_DIR)/baseline && mkdir -p $(BENCH_DIR)/baseline
	git archive $(BENCH_BASELINE) echod etc | tar -x -C $(BENCH_DIR)/baseline
endif
	$(VENV_PYTHON) bench/run.py $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick) \
		$(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE) $(BENCH_DIR)/baseline) $(BENCH_ARGS)

$(BENCH_DIR)/%: bench/%.c bench/procstat.h
	@mkdir -p $(BENCH_DIR)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $<

$(BENCH_DIR)/pylib/.installed: $(VENV)/.installed
	@mkdir -p $(BENCH_DIR)/pylib
	$(VENV_PYTHON) -m pip install --quiet --upgrade --target $(BENCH_DIR)/pylib uvloop \
		|| echo "bench: uvloop did not install; the benchmark leaves it out"
	touch $@
