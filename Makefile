# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ at the repository root when it is missing and install the pinned set into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test bench install clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ntkdist run examples/demo.toml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.kernels

clean-venv:
	rm -rf $(VENV)
