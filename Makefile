# echod developer tasks. `make run` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# Bookworm's own interpreter and packages: the versions the .deb runs on,
# and the systemd tools the tests drive (systemd-socket-activate, systemd-analyze).
SYSTEM_PYTHON ?= /usr/bin/python3
SYSTEM_TEST_PACKAGES := python3-twisted python3-sdnotify python3-pytest python3-hypothesis systemd
PYTEST_ARGS ?=

RUN_DIR := .run
RUN_PORT ?= 7007

.PHONY: run test test-venv test-system system-packages lint check-config fuzz clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --editable '.[test,lint]'
	touch $@

venv: $(VENV)/.installed

# The shipped configuration with the privileged echo port moved to $(RUN_PORT)
# and the access log kept in $(RUN_DIR).
$(RUN_DIR)/echod.conf: etc/echod.conf
	mkdir -p $(RUN_DIR)
	sed -e 's/^port = 7$$/port = $(RUN_PORT)/' \
	    -e 's|^access_log = .*|access_log = $(CURDIR)/$(RUN_DIR)/access.log|' etc/echod.conf > $@

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
