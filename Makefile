# Entry points. Every target bootstraps the virtual environment it needs on a fresh machine.
# Override PY to use an environment of your own (e.g. one with the CUDA torch build you want):
#   make features PY=python TRACK=image DATA=/data/aigiqa20k DEVICE=cuda
SHELL := /bin/bash
VENV ?= .venv
PY ?= $(VENV)/bin/python
BOOT := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed,)

TRACK ?= image
DATA ?=
# Offline default: needs no download. Image extractors run over sampled frames on the video track.
EXTRACTORS ?= generator,prompt_minilm,nss,effnet_lite0
DATA_NAME = $(notdir $(patsubst %/,%,$(basename $(DATA))))
STORE ?= stores/$(DATA_NAME)-$(TRACK).h5
DEVICE ?= cpu
PRECISION ?= auto
BATCH ?= 32
WORKERS ?= 2
# torch CPU threads for extraction (empty: torch's default); 1 is best on a busy shared machine
THREADS ?=
SHARD ?=
SPLIT ?=
TARGET ?= mos
OUT ?= runs/$(DATA_NAME)-$(TRACK)-$(TARGET)
TRIALS ?=
# worker processes for tuning/refitting the heads (empty: all cores, at most 8)
JOBS ?=
PROTOCOL ?= grouped
MODEL ?= $(OUT)/model.pkl
RECIPE ?=

.PHONY: help install features regress predict demo test test-fast bench ablate reproduce describe list clean-venv

help:
	@echo "make demo                      # offline end-to-end run on an embedded dataset (no download)"
	@echo "make test                      # the test suite"
	@echo "make features TRACK=image|video DATA=<dataset> [EXTRACTORS=a,b] [STORE=f.h5] [DEVICE=cpu|cuda] [SHARD=k/N]"
	@echo "make regress  TRACK=image|video [DATA=..|STORE=..] [EXTRACTORS=..] [TARGET=mos] [OUT=dir] [TRIALS=n] [JOBS=n]"
	@echo "make predict  MODEL=runs/.../model.pkl STORE=.. [SPLIT=test] [OUT=dir]"
	@echo "make ablate   TRACK=.. [RECIPE=..] [STORE=..]   make reproduce TRACK=.. DATA=<official download>"
	@echo "make describe DATA=<dataset>   make list   make bench"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/ci.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -c constraints/ci.txt -e '.[all,test]'
	touch $@

list: $(BOOT)
	$(PY) -m extractors list

describe: $(BOOT)
	$(PY) -m features_store describe $(DATA)

features: $(BOOT)
	@test -n "$(DATA)" || { echo "set DATA=<dataset folder or yaml>"; exit 2; }
	$(PY) -m extractors run --track $(TRACK) --data $(DATA) --extractors $(EXTRACTORS) --store $(STORE) \
		--device $(DEVICE) --precision $(PRECISION) --batch-size $(BATCH) --workers $(WORKERS) \
		$(if $(SHARD),--shard $(SHARD),) $(if $(SPLIT),--split $(SPLIT),) $(if $(THREADS),--threads $(THREADS),)

regress: $(BOOT)
	$(PY) -m regressors fit --track $(TRACK) --store $(STORE) --extractors $(EXTRACTORS) --target $(TARGET) \
		--out $(OUT) --protocol $(PROTOCOL) $(if $(TRIALS),--trials $(TRIALS),) $(if $(JOBS),--jobs $(JOBS),)

predict: $(BOOT)
	$(PY) -m regressors predict --model $(MODEL) --store $(STORE) --split $(or $(SPLIT),test) --out $(OUT)/predict

demo: $(BOOT)
	$(PY) -m experiments.demo

ablate: $(BOOT)
	$(PY) -m experiments.ablate --track $(TRACK) --store $(STORE) --target $(TARGET) --out $(OUT)/ablation \
		$(if $(RECIPE),--recipe $(RECIPE),--extractors $(EXTRACTORS)) $(if $(TRIALS),--trials $(TRIALS),) \
		--protocol $(PROTOCOL)

reproduce: $(BOOT)
	@test -n "$(DATA)" || { echo "set DATA=<official AIGIQA-20K or T2VQA-DB download>"; exit 2; }
	$(PY) -m experiments.reproduce --track $(TRACK) --data $(DATA) --device $(DEVICE) --store $(STORE) \
		--precision $(PRECISION) --batch-size $(BATCH) --workers $(WORKERS) \
		$(if $(RECIPE),--recipe $(RECIPE),) $(if $(SHARD),--shard $(SHARD),) $(if $(TRIALS),--trials $(TRIALS),) \
		$(if $(FIT_ONLY),--fit-only,) $(if $(JOBS),--jobs $(JOBS),)

test: $(BOOT)
	$(PY) -m pytest -q

test-fast: $(BOOT)
	$(PY) -m pytest -q -m "not slow"

bench: $(BOOT)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
