# Two entry points: `make book` and `make test`. Both create (or reuse) the
# project-local virtual environment .venv and install the pinned packages into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= embedded
# Offline unless the profile is the paper's (Hub models and data), or you set the
# variables yourself: `HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 make book PROFILE=mine.yaml`.
HUB_OFFLINE := $(if $(filter paper,$(PROFILE)),0,1)
export HF_HUB_OFFLINE ?= $(HUB_OFFLINE)
export HF_DATASETS_OFFLINE ?= $(HUB_OFFLINE)
export TOKENIZERS_PARALLELISM := false

.PHONY: install resources chromium book test unit lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (skill-neurons)"
	touch $(STAMP)

install: $(STAMP)

resources: install
	$(PY) -m helpers.resources

# The browser check of the built book needs Chromium: installed from Debian where this
# runs as root with apt; elsewhere the check is skipped (the rest of `make test` runs).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium; } >/dev/null 2>&1; } || \
	  echo "chromium not installed: the browser check of the book will be skipped"

book: resources
	$(PY) -m helpers.runner book --profile $(PROFILE)

test: resources chromium
	$(PY) -m ruff check helpers tests bench
	$(PY) -m pytest

unit: install
	$(PY) -m pytest -m "not slow and not notebooks"

lint: install
	$(PY) -m ruff format --check helpers tests bench
	$(PY) -m ruff check helpers tests bench

clean:
	rm -rf _build artefacts
