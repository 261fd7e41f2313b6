# Two commands on a fresh clone: `make demo` and `make test`. Both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export FEAST_USAGE := False
export GX_ANALYTICS_ENABLED := False
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: install model demo test test-fast data clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements.lock pins every transitive dependency (constraints), pyproject.toml the direct ones.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock -e ".[test,cloud]"
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with pinned dependencies

model: install  ## fetch the embedded default LLM into the cache (once)
	$(BIN)/reclora model fetch

demo: model  ## install, fetch the model, run the main job: the whole pipeline locally (kfp.local)
	$(BIN)/reclora pipeline run --local --profile small

test: model  ## install, fetch the model, run the whole test suite
	$(BIN)/python -m pytest tests -q

test-fast: install  ## tests not marked slow (no real LLM, DVC or S3 end to end; quick Feast/GE/torchrun tests run)
	$(BIN)/python -m pytest tests -q -m "not slow"

data: install  ## the DVC data stages (prepare, validate) with params.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf runs data/prepared reports .pytest_cache
