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
# podman/buildah: runc and capped ulimits (a Docker engine ignores it)
export CONTAINERS_CONF ?= $(CURDIR)/infra/docker/containers.conf
IMAGES ?= all

.PHONY: install model demo test test-fast test-spark data clean help images container-engine docs lint

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements.lock pins every transitive dependency (constraints), pyproject.toml the direct ones.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock -e ".[test,cloud,peer,docs]"
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with pinned dependencies

model: install  ## fetch the embedded default LLM into the cache (once)
	$(BIN)/reclora model fetch

demo: model  ## install, fetch the model, run the main job: the whole pipeline locally (kfp.local)
	$(BIN)/reclora pipeline run --local --profile small

# The checks `make test` runs before the suite: the docs build and ruff (lint and the formatter's check).
CHECKS := docs lint

test: model container-engine $(CHECKS)  ## install, fetch the model, (podman if missing), build the docs, ruff, run the whole test suite
	$(BIN)/python -m pytest tests -q

docs: install  ## build the docs site into site/ (mkdocs --strict: a broken link, anchor or API reference fails)
	$(BIN)/mkdocs build --strict

lint: install  ## ruff: lint (pyproject.toml [tool.ruff]) and the formatter's check; changes nothing
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install  ## tests not marked slow (no real LLM, DVC or S3 end to end; quick Feast/GE/torchrun tests run)
	$(BIN)/python -m pytest tests -q -m "not slow"

# The Spark tests are optional (not in `make test`: the pyspark wheel and a JRE add minutes to a fresh CI run);
# this installs the `spark` extra, a Java runtime where apt can, and runs them.
test-spark: install  ## the optional Spark tests: installs the spark extra (pyspark) and a JRE (apt), then runs them
	$(BIN)/pip install --quiet -c requirements.lock -e ".[test,cloud,peer,spark]"
	@command -v java >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } \
	  || echo "no Java runtime (apt openjdk-17-jre-headless): the Spark tests will be skipped"
	$(BIN)/python -m pytest tests/integration/test_spark_prepare.py tests/integration/test_spark_local.py -q

images: install  ## build the CPU, GPU and Spark images (IMAGES=cpu|gpu|spark|all): docker, or podman with a local base image
	PYTHON=$(abspath $(BIN)/python) scripts/images.sh $(IMAGES)

# The container tests (pytest -m container) need docker or podman; install podman where apt can,
# otherwise they are skipped with the reason.
container-engine:
	@if command -v podman >/dev/null || (command -v docker >/dev/null && docker info >/dev/null 2>&1); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing podman (apt) for the container tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap uidmap >/dev/null) \
	    || echo "podman could not be installed: the container tests will be skipped"; \
	else echo "no docker or podman, and apt needs root: the container tests will be skipped"; fi

data: install  ## the DVC data stages (prepare, validate) with params.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf runs data/prepared reports .pytest_cache site
