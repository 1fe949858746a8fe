# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates its own virtualenv (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench bench-peer soak clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# pip's and setuptools' notices go to a log, shown only if the install fails
	$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	$(BIN)/python -m pip install --quiet -e '.[test]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m examples.demo

test: $(BIN)/.installed
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/store_requests.py
	$(BIN)/python bench/overhead.py

bench-peer: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -r bench/requirements-peer.txt
	$(BIN)/python bench/peer_langgraph.py

# A fault soak (a minute or two): sessions through a faulty wire, workers killed and stopped.
soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache
