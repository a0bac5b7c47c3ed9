# mo_align — every target is .PHONY; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.mo_align-installed

# One name in four places: weightings/<algo>.py = WEIGHTINGS key = recipes/<model>/<algo>.yaml = make train-<algo>.
ALGORITHMS := linear tchebycheff smooth_tchebycheff lagrangian mgda gradnorm dynamic pama ctwa
MODEL ?= qwen2.5-1.5b
ACCELERATE ?= ddp
ARGS ?=
TINY_MODEL_DIR ?= outputs/tiny-model
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline

check_algo = $(if $(filter $(1),$(ALGORITHMS)),,$(error unknown algorithm '$(1)'; valid: $(ALGORITHMS)))

.PHONY: help install test test-slow lint format demo tiny-model smoke clean
.PHONY: $(addprefix train-,$(ALGORITHMS)) $(addprefix smoke-,$(ALGORITHMS))

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort | awk -F'\t' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  algorithms: $(ALGORITHMS)"
	@echo "  variables: MODEL=$(MODEL) ACCELERATE=$(ACCELERATE) ARGS='...'"

install: $(STAMP) ## create .venv with the pinned stack (fast when current)

$(STAMP): setup.cfg constraints-cpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -c constraints-cpu.txt torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install -q -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

test: install ## offline test suite (CPU)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install ## slow tests only
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: install ## ruff format --check + ruff check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install ## apply ruff format + fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tiny-model: install ## write the offline tiny model + tokenizer to outputs/tiny-model
	$(PY) -m mo_align.testing --out $(TINY_MODEL_DIR)

demo: tiny-model ## short CPU training of the tiny model (linear) with a per-objective table
	$(PY) -m mo_align.train --config recipes/tiny/linear.yaml $(ARGS)

train-%: install ## accelerate launch recipes/$(MODEL)/<algo>.yaml with configs/accelerate/$(ACCELERATE).yaml
	$(call check_algo,$*)
	$(VENV)/bin/accelerate launch --config_file configs/accelerate/$(ACCELERATE).yaml -m mo_align.train \
		--config recipes/$(MODEL)/$*.yaml $(ARGS)

smoke-%: tiny-model ## tiny recipe recipes/tiny/<algo>.yaml on CPU
	$(call check_algo,$*)
	$(PY) -m mo_align.train --config recipes/tiny/$*.yaml $(ARGS)

smoke: $(addprefix smoke-,$(ALGORITHMS)) ## every tiny recipe

clean: ## remove outputs (keeps .venv)
	rm -rf outputs
