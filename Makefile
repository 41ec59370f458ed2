# The project's vocabulary: install, demo, test, test-compat, lint, chart-lint, chart-test,
# image, image-test, bench. Every target installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMPAT_VENV := .venv-compat
# The older JupyterHub line the real-hub tests also pass on (`make test-compat`).
COMPAT_JUPYTERHUB := jupyterhub>=5.1,<6

.PHONY: install demo test test-compat lint clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# One real spawn -> verify -> stop cycle against a throw-away local JupyterHub.
demo: install
	$(BIN)/python -m tests.localhub demo

test: install
	$(BIN)/pytest

test-compat: node_modules/.installed
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/pip install --quiet -e '.[test]' '$(COMPAT_JUPYTERHUB)'
	$(COMPAT_VENV)/bin/pytest -m hub

clean:
	rm -rf $(VENV) $(COMPAT_VENV) node_modules .tools build *.egg-info

# --- Kubernetes: chart and image (chart-lint, chart-test, image, image-test, tools) ---
