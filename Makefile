# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates its own virtualenv (.venv) on first use. `make test` also needs Node.js
# with npm: it installs dynalite (an independent DynamoDB implementation the suite runs
# against) into tests/dynalite/node_modules from the committed lockfile, nothing global.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NPM    ?= npm
DYNALITE_DIR := tests/dynalite

.PHONY: demo test bench bench-peer soak clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# pip's and setuptools' notices go to a log, shown only if the install fails
	$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	$(BIN)/python -m pip install --quiet -e '.[test]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $@

# npm ci: exactly the lockfile's versions, checked against their integrity hashes.
# --ignore-scripts: the in-memory server needs no build step (its LevelDB dependency
# loads a prebuilt binary), and nothing from the registry runs at install time.
$(DYNALITE_DIR)/node_modules/.installed: $(DYNALITE_DIR)/package.json $(DYNALITE_DIR)/package-lock.json
	@command -v $(NPM) >/dev/null 2>&1 && command -v node >/dev/null 2>&1 || { \
	  echo "error: make test needs Node.js 18+ with npm (to install dynalite into $(DYNALITE_DIR));" \
	       "'node' or '$(NPM)' is not on PATH. Install Node.js (https://nodejs.org/ or your package" \
	       "manager), then run make test again." >&2; exit 1; }
	$(NPM) ci --prefix $(DYNALITE_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

demo: $(BIN)/.installed
	@$(BIN)/python -m examples.demo

test: $(BIN)/.installed $(DYNALITE_DIR)/node_modules/.installed
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(BIN)/.installed
	$(BIN)/python bench/store_requests.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/ui.py
	$(BIN)/python bench/flow.py

bench-peer: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -r bench/requirements-peer.txt
	$(BIN)/python bench/peer_langgraph.py

# A fault soak (a minute or two): sessions through a faulty wire, workers killed and stopped.
soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache $(DYNALITE_DIR)/node_modules
