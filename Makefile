# medcl developer commands. `make demo` and `make test` work from a clean clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || (command -v $(PYTHON) >/dev/null && $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV))
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/medcl demo --out runs/demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

lint: setup
	$(VENV)/bin/ruff format --check medcl apps tests benchmarks
	$(VENV)/bin/ruff check medcl apps tests benchmarks

format: setup
	$(VENV)/bin/ruff format medcl apps tests benchmarks
	$(VENV)/bin/ruff check --fix medcl apps tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
