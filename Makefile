# geomlib: two commands on a fresh machine.
#   make dashboard   set up, then serve the dashboard on the bundled demo model
#   make test        set up, then run the whole test suite
#   make demo-sweep  train the demo run (~70 s on one core) and refresh its committed sweep dataset in cache/
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
PORT   ?= 8866
STAMP   = $(VENV)/.geomlib-installed

DEMO_SWEEP ?= build/demo-sweep
DEMO_SWEEP_NAME = demo-tiny-llama

.PHONY: setup browser test test-fast dashboard demo-sweep clean

setup: $(STAMP)

# Browser tests drive Debian's chromium through Playwright (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

$(STAMP): pyproject.toml constraints.txt requirements-demo.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	$(PIP) install --quiet --no-deps -r requirements-demo.txt
	touch $@

test: $(STAMP) browser
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

dashboard: $(STAMP)
	$(VENV)/bin/voila notebooks/dashboard.ipynb --port=$(PORT) --no-browser --Voila.ip=127.0.0.1

# The checkpoints are regenerated (deterministic), never committed; only the sweep dataset lands in cache/.
demo-sweep: $(STAMP)
	rm -rf $(DEMO_SWEEP) $(DEMO_SWEEP)-cache
	$(PY) scripts/train_demo_sweep.py $(DEMO_SWEEP)
	$(PY) -m geomlib sweep $(DEMO_SWEEP) --name $(DEMO_SWEEP_NAME) --cache $(DEMO_SWEEP)-cache
	rm -rf cache/sweep-$(DEMO_SWEEP_NAME)-*
	cp -r $(DEMO_SWEEP)-cache/sweep-$(DEMO_SWEEP_NAME)-* cache/

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
