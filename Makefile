# schoolctl: the two commands of README.md, and the developer's helpers.
#   make demo   deploy the demo school onto a local lab server (a real Debian 13 host), then audit it
#   make test   the whole test suite: fast unit tests + lab integration tests (needs root)
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# the lab, the vault key and the secrets of the demo live outside git (see .gitignore)
export SCHOOLCTL_VAULT_KEY_FILE ?= $(CURDIR)/.schoolctl/vault.key
export SCHOOLCTL_SECRETS_DIR ?= $(CURDIR)/secrets
# the artifact mirror the lab serves (real release trees, built outside the repo; see README)
export SCHOOLCTL_MIRROR ?= /var/lib/schoolctl/mirror
LAB_PACKAGES := debootstrap debian-archive-keyring systemd-container iproute2 openssh-client tinyproxy \
	apt-cacher-ng pebble openssl curl nftables ldap-utils coturn chromium fonts-noto-core bzip2 python3-venv socat \
	poppler-utils fonts-dejavu-core borgbackup
PYTEST_ARGS ?=
# the lab host schools/demo.yaml names (server: lab:demo), and the city's backup host fleet.yaml names
DEMO_LAB ?= demo
DEMO_BACKUP_LAB ?= backup

.PHONY: demo test test-fast lint bench setup prereqs clean-lab

setup: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

prereqs:
	@missing=$$(for p in $(LAB_PACKAGES); do dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing the lab's Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now apt-cacher-ng tinyproxy coturn 2>/dev/null || true; fi; \
	fi

# An app whose release is neither in the mirror nor downloadable is left out with one line, the rest
# is deployed and audited, and the demo ends non-zero naming what was left out.
demo: setup prereqs
	$(BIN)/schoolctl secrets init
	$(BIN)/schoolctl validate demo
	$(BIN)/schoolctl lab up $(DEMO_LAB) $(DEMO_BACKUP_LAB)
	@rc=0; \
	$(BIN)/schoolctl deploy demo --yes || rc=$$?; \
	[ $$rc -le 1 ] || exit $$rc; \
	$(BIN)/schoolctl deploy demo --yes || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
	  $(BIN)/schoolctl backup demo || rc=1; \
	  $(BIN)/schoolctl backup verify demo || rc=1; \
	fi; \
	$(BIN)/schoolctl audit demo --format html --output artifacts/demo-audit.html >/dev/null || true; \
	$(BIN)/schoolctl audit demo || rc=1; \
	echo "the audit report: artifacts/demo-audit.html"; \
	exit $$rc

# the unit tests on both cores; alone: test_lab.py (it serves the lab's mirror from a folder of its own
# for a while) and test_video.py (two browsers in a call: no other load); then the other lab modules
# on two workers, each module on one (tests/lab/conftest.py orders them longest first), sharing the
# lab's city services
LAB_ALONE := tests/lab/test_lab.py tests/lab/test_video.py
test: setup prereqs
	$(BIN)/ruff check core cli deploy audit inventories tests bench
	$(BIN)/pytest -m "not lab" -n 2 $(PYTEST_ARGS)
	@rc=0; $(BIN)/pytest -m lab $(LAB_ALONE) $(PYTEST_ARGS) || rc=$$?; \
	$(BIN)/pytest -m lab -n 2 --dist loadfile --no-loadscope-reorder $(addprefix --deselect ,$(LAB_ALONE)) \
	  $(PYTEST_ARGS) || rc=$$?; exit $$rc

test-fast: setup
	$(BIN)/pytest -m "not lab" -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check core cli deploy audit inventories tests bench

bench: setup prereqs
	for b in bench/*.py; do $(BIN)/python $$b; done

clean-lab: setup
	$(BIN)/schoolctl lab down
