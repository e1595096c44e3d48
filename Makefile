# Two entry points do all set-up on a fresh machine:  make run   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PACKS  := build/model-packs
STAMP  := $(VENV)/.installed

# Tests that need no model build, on both cores (about 80 s): make test-quick
.PHONY: run test test-quick deps system-deps models clean-models bundle

system-deps:
	bash .ci/system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[build,dev,package,cluster]'
	touch $(STAMP)

deps: system-deps $(STAMP)

models: deps
	$(BIN)/firstlook build-models --out $(PACKS)

# Opens the desktop app where a display exists, otherwise runs the headless node + pipeline.
run: models
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then $(BIN)/firstlook; \
	else echo "No display: running headless (Ctrl-C stops)"; $(BIN)/firstlook --headless; fi

# Boundaries first (import-linter contracts in pyproject.toml): seconds, and a broken one fails CI.
test: models
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

test-quick: deps
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -m "not packs" -n 2

# Offline installer for hospital IT (docs/install.md): dist/firstlook-<version>-linux-x86_64.tar.gz
bundle: models
	$(BIN)/python packaging/build_bundle.py --packs $(PACKS) --out dist

clean-models:
	rm -rf $(PACKS)
