# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
INSTALLED      := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.test-installed
# Two workers, one test file per worker: files share fixtures within themselves, and every
# hub binds its own free port and data directory, so files never clash.
PYTEST_ARGS ?= -n 2 --dist loadfile
# The browser tests drive Debian's Chromium (never a test framework's own browser download).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint bench bench-footprint clean system-tools fuzz

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo trains an MLP (torch) on scikit-learn's bundled digits (data): the base install
# plus those two extras. `pip install fedpact` alone is the hub, CLI, SDK and NumPy models.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[torch,data]'
	touch $@

$(TEST_INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/fedpact demo

test: $(TEST_INSTALLED) system-tools
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff and mypy, configured in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: $(TEST_INSTALLED)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

# Installs the Debian packages the tests drive when they are missing (as root, or with
# passwordless sudo): chromium for the browser tests, haproxy for the deployed-hub test.
SYSTEM_TOOLS := $(CHROMIUM):chromium /usr/sbin/haproxy:haproxy
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do [ -x "$${t%%:*}" ] || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
		echo "installing$$missing for the tests"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
		|| { echo "could not install$$missing: run 'apt-get install$$missing' as root" >&2; exit 1; }; \
	fi

# A long schemathesis run against a live hub (the suite runs the same test with 8 examples).
FUZZ_EXAMPLES ?= 200
fuzz: $(TEST_INSTALLED)
	FEDPACT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/integration/test_hub_fuzz.py -q -s -p no:cacheprovider

bench: $(INSTALLED)
	$(PY) bench/fedavg_throughput.py
	$(PY) bench/round_overhead.py

# Base venv size and participant start-up against Flower's, each in its own fresh venv.
bench-footprint: $(INSTALLED)
	$(PY) bench/footprint.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache test-artifacts
