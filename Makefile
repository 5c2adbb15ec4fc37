# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
INSTALLED      := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/fedpact demo

test: $(TEST_INSTALLED)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED)
	$(PY) bench/fedavg_throughput.py
	$(PY) bench/round_overhead.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache test-artifacts
