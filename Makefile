# Two entry points: `make book` and `make test`. Both create (or reuse) the
# project-local virtual environment .venv and install the pinned packages into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= embedded
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install resources book test unit lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (skill-neurons)"
	touch $(STAMP)

install: $(STAMP)

resources: install
	$(PY) -m helpers.resources

book: resources
	$(PY) -m helpers.runner book --profile $(PROFILE)

test: resources
	$(PY) -m ruff check helpers tests bench
	$(PY) -m pytest

unit: install
	$(PY) -m pytest -m "not slow and not notebooks"

lint: install
	$(PY) -m ruff format --check helpers tests bench
	$(PY) -m ruff check helpers tests bench

clean:
	rm -rf _build artefacts
