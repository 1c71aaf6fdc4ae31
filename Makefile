# One command to set up and run the hub, one to set up and pass the tests (see README.md).
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: setup browser haproxy serve test lint

setup: $(VENV)/.installed

# torch comes from the package registry (a CUDA build that also runs on CPU); never pin 2.13.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[cpu,dev]"
	touch $@

# Debian's chromium for the browser tests (playwright's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# Debian's haproxy for the replica test (two `demohub serve` behind deploy/haproxy.cfg).
haproxy:
	@command -v haproxy >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq haproxy; }

serve: setup
	$(BIN)/demohub serve

test: setup browser haproxy
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
