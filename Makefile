# Entry points. Every target calls `aigcq <job>` (the console command of this package) and
# bootstraps the virtual environment it needs on a fresh machine. Override PY to use an
# environment of your own (e.g. one with the CUDA torch build you want):
#   make features PY=python TRACK=image DATA=/data/aigiqa20k DEVICE=cuda
#
# Variables reach the commands as environment variables, always double-quoted ("$$DATA"):
# a value is one argument whatever it holds (spaces, quotes, `;`), never shell code.
SHELL := /bin/bash
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Reinstall when pyproject.toml or the constraints change (their content, not their file times:
# a fresh clone beside an existing environment with the same files does not reinstall into it).
INSTALL_HASH := $(shell cat pyproject.toml constraints/ci.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_HASH)
BOOT := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP),)

TRACK ?= image
# dataset folder or YAML (make features/describe/validate/reproduce; regress/ablate/predict find the store from it)
DATA ?=
# Offline default: needs no download. Image extractors run over sampled frames on the video track.
EXTRACTORS ?= generator,prompt_minilm,nss,effnet_lite0
# feature store (default: derived from DATA and TRACK by aigcq)
STORE ?=
DEVICE ?= cpu
PRECISION ?= auto
BATCH ?= 32
WORKERS ?= 2
# torch CPU threads for extraction (empty: auto, the usable CPUs not busy with other work)
THREADS ?=
SHARD ?=
# local | ray: `make features ENGINE=ray` runs shards as Ray actors and merges them (docs/scale.md);
# `make regress ENGINE=ray` runs the searches and refits as Ray tasks. Cluster: ARGS="--address auto"
ENGINE ?=
SPLIT ?=
TARGET ?= mos
# run folder (default: runs/<store name>-<target>)
OUT ?=
TRIALS ?=
# worker processes for tuning/refitting the heads (empty: all cores, at most 8)
JOBS ?=
PROTOCOL ?= grouped
# model bundle for predict/score (default for predict: the run folder of STORE/DATA and TARGET)
MODEL ?=
RECIPE ?=
FIT_ONLY ?=
# stop | skip: what `features`/`reproduce` do with invalid items (skip records them as failed, with a report)
ON_INVALID ?=
# fit/score the done subset of an incomplete split (a submission is never written for one)
ALLOW_INCOMPLETE ?=
# make score: INPUT (a file, folder or list), PROMPTS (table), GENERATOR, SCORES (output file)
INPUT ?=
PROMPTS ?=
GENERATOR ?=
SCORES ?=
# extra arguments for the job (split into words, never run as shell code)
ARGS ?=

export VENV PY TRACK DATA EXTRACTORS STORE DEVICE PRECISION BATCH WORKERS THREADS SHARD ENGINE SPLIT TARGET OUT TRIALS \
	JOBS PROTOCOL MODEL RECIPE FIT_ONLY ON_INVALID ALLOW_INCOMPLETE INPUT PROMPTS GENERATOR SCORES ARGS

AIGCQ = "$$PY" -m aigcq

.PHONY: help install features regress predict score demo test test-fast bench docs ablate reproduce describe validate list clean-venv

help:
	@echo "make demo                      # offline end-to-end run on an embedded dataset (no download)"
	@echo "make test                      # the test suite"
	@echo "make features TRACK=image|video DATA=<dataset> [EXTRACTORS=a,b] [STORE=f.h5] [DEVICE=cpu|cuda] [SHARD=k/N|ENGINE=ray] [ON_INVALID=skip]"
	@echo "make regress  TRACK=image|video DATA=..|STORE=.. [EXTRACTORS=..] [TARGET=mos] [OUT=dir] [TRIALS=n] [JOBS=n|ENGINE=ray]"
	@echo "make predict  MODEL=runs/.../model STORE=..|DATA=.. [SPLIT=test] [OUT=dir]"
	@echo "make score    MODEL=runs/.../model INPUT=<file|folder|list> [PROMPTS=table] [GENERATOR=name] [SCORES=out.csv]"
	@echo "make ablate   TRACK=.. [RECIPE=..] [STORE=..]   make reproduce TRACK=.. DATA=<official download>"
	@echo "make describe DATA=<dataset>   make validate DATA=<dataset>   make list   make bench"
	@echo "make docs                      # the documentation site into site/ (mkdocs build --strict)"
	@echo "every job: $(PY) -m aigcq --help (installed: aigcq --help)"

install: $(STAMP)

$(STAMP):
	test -x "$(VENV)/bin/python" || python3 -m venv "$(VENV)"
	"$(VENV)/bin/python" -m pip install -q -c constraints/ci.txt -e '.[all,test,docs]'
	rm -f "$(VENV)"/.installed*
	touch "$@"

list: $(BOOT)
	$(AIGCQ) list $$ARGS

describe: $(BOOT)
	@test -n "$$DATA" || { echo "set DATA=<dataset folder or yaml>"; exit 2; }
	$(AIGCQ) describe "$$DATA" $$ARGS

validate: $(BOOT)
	@test -n "$$DATA" || { echo "set DATA=<dataset folder or yaml>"; exit 2; }
	$(AIGCQ) validate "$$DATA" $$ARGS

features: $(BOOT)
	@test -n "$$DATA" || { echo "set DATA=<dataset folder or yaml>"; exit 2; }
	$(AIGCQ) features --track "$$TRACK" --data "$$DATA" --extractors "$$EXTRACTORS" $${STORE:+--store "$$STORE"} \
		--device "$$DEVICE" --precision "$$PRECISION" --batch-size "$$BATCH" --workers "$$WORKERS" \
		$${SHARD:+--shard "$$SHARD"} $${SPLIT:+--split "$$SPLIT"} $${THREADS:+--threads "$$THREADS"} \
		$${ON_INVALID:+--on-invalid "$$ON_INVALID"} $${ENGINE:+--engine "$$ENGINE"} $$ARGS

regress: $(BOOT)
	@test -n "$$DATA$$STORE" || { echo "set DATA=<dataset> or STORE=<store.h5>"; exit 2; }
	$(AIGCQ) regress --track "$$TRACK" $${STORE:+--store "$$STORE"} $${DATA:+--data "$$DATA"} \
		--extractors "$$EXTRACTORS" --target "$$TARGET" $${OUT:+--out "$$OUT"} --protocol "$$PROTOCOL" \
		$${TRIALS:+--trials "$$TRIALS"} $${JOBS:+--jobs "$$JOBS"} $${ALLOW_INCOMPLETE:+--allow-incomplete} \
		$${ENGINE:+--engine "$$ENGINE"} $$ARGS

predict: $(BOOT)
	@test -n "$$DATA$$STORE" || { echo "set DATA=<dataset> or STORE=<store.h5>"; exit 2; }
	$(AIGCQ) predict --track "$$TRACK" $${STORE:+--store "$$STORE"} $${DATA:+--data "$$DATA"} \
		$${MODEL:+--model "$$MODEL"} --target "$$TARGET" --split "$${SPLIT:-test}" $${OUT:+--out "$$OUT/predict"} \
		$${ALLOW_INCOMPLETE:+--allow-incomplete} $$ARGS

score: $(BOOT)
	@test -n "$$MODEL" -a -n "$$INPUT" || { echo "set MODEL=<model bundle> INPUT=<file, folder or list>"; exit 2; }
	$(AIGCQ) score "$$MODEL" "$$INPUT" $${PROMPTS:+--prompts "$$PROMPTS"} $${GENERATOR:+--generator "$$GENERATOR"} \
		$${SCORES:+-o "$$SCORES"} --device "$$DEVICE" $$ARGS

demo: $(BOOT)
	$(AIGCQ) demo $$ARGS

ablate: $(BOOT)
	@test -n "$$DATA$$STORE" || { echo "set DATA=<dataset> or STORE=<store.h5>"; exit 2; }
	$(AIGCQ) ablate --track "$$TRACK" $${STORE:+--store "$$STORE"} $${DATA:+--data "$$DATA"} --target "$$TARGET" \
		$${OUT:+--out "$$OUT/ablation"} $(if $(RECIPE),--recipe "$$RECIPE",--extractors "$$EXTRACTORS") \
		$${TRIALS:+--trials "$$TRIALS"} --protocol "$$PROTOCOL" $$ARGS

reproduce: $(BOOT)
	@test -n "$$DATA" || { echo "set DATA=<official AIGIQA-20K or T2VQA-DB download>"; exit 2; }
	$(AIGCQ) reproduce --track "$$TRACK" --data "$$DATA" --device "$$DEVICE" $${STORE:+--store "$$STORE"} \
		--precision "$$PRECISION" --batch-size "$$BATCH" --workers "$$WORKERS" \
		$${RECIPE:+--recipe "$$RECIPE"} $${SHARD:+--shard "$$SHARD"} $${TRIALS:+--trials "$$TRIALS"} \
		$${FIT_ONLY:+--fit-only} $${JOBS:+--jobs "$$JOBS"} $${ON_INVALID:+--on-invalid "$$ON_INVALID"} $$ARGS

test: $(BOOT)
	"$$PY" -m pytest -q

test-fast: $(BOOT)
	"$$PY" -m pytest -q -m "not slow"

bench: $(BOOT)
	for b in benchmarks/bench_*.py; do echo "== $$b"; "$$PY" "$$b" || exit 1; done

# every warning is an error; benchmark tables are rendered from benchmarks/results/*.json (tools/docs_hooks.py)
docs: $(BOOT)
	NO_MKDOCS_2_WARNING=1 "$$PY" -m mkdocs build --strict --site-dir site

clean-venv:
	rm -rf "$(VENV)"
