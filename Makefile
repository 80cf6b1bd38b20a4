# grasptpu: host -> models/ -> board. `make help` lists the targets.
PYTHON ?= python3
DATA ?= data
SESSION ?= ZRec50
RECORDING = $(DATA)/$(SESSION).neo.mat
STAMP = .make/installed

MODELS ?= models
MODEL_DIRS = $(MODELS)/$(SESSION)-object $(MODELS)/$(SESSION)-grasp-phase
BOARD ?= board1
INVENTORY ?= .boards/boards.toml
SIMULATED = $(filter .boards/boards.toml,$(INVENTORY))
.PHONY: help install sshd demo data data-all prepare train quantize compile deploy bench-board firmware-test test test-fast bench bench-data bench-train bench-quant board-up board-down check-sessions clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev]'
	@mkdir -p .make && touch $@

install: $(STAMP)  ## install grasptpu and its dev tools into $(PYTHON)

demo: prepare train quantize compile deploy bench-board firmware-test  ## the main job end to end: default session -> simulated board

$(RECORDING): | $(STAMP)
	grasptpu synth --session $(SESSION) --out $(DATA)

data: $(RECORDING)  ## write the embedded default synthetic session (ZRec50)

data-all: $(STAMP)  ## write all six synthetic sessions
	grasptpu synth --all --out $(DATA)

prepare: $(RECORDING)  ## load, bin (cached), split and window the default session; print the summary
	grasptpu prepare $(RECORDING)

train: $(RECORDING)  ## train the object classifier and the grasp-phase detector on the default session
	grasptpu train $(RECORDING) --task object --models-dir $(MODELS)
	grasptpu train $(RECORDING) --task grasp-phase --models-dir $(MODELS)

quantize:  ## int8 + float TFLite of both models, then the float-vs-int8 gate (fails on a regression)
	grasptpu quantize $(MODEL_DIRS)
	grasptpu check-quant $(MODEL_DIRS)

compile:  ## edgetpu_compiler on both int8 models; without the compiler: says so, keeps the check as evidence
	@grasptpu compile $(MODEL_DIRS); rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "make compile: no edgetpu_compiler here; Edge TPU check of the int8 models:"; \
	  grasptpu edgetpu-check $(MODEL_DIRS); else exit $$rc; fi

sshd:  ## install Debian's OpenSSH server (the simulated boards' sshd) if it is missing
	@test -x /usr/sbin/sshd || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server; }

deploy: $(if $(SIMULATED),board-up)  ## push both models, device/ and firmware_tests/ to $(BOARD) (default: the simulated board)
	grasptpu deploy $(MODEL_DIRS) --board $(BOARD) --inventory $(INVENTORY)

bench-board:  ## device.bench + device.stream on $(BOARD) over SSH, beside the host's figures (exit 1 on a miss)
	grasptpu bench --board $(BOARD) --inventory $(INVENTORY)

firmware-test:  ## the on-board pytest suite on $(BOARD); junit report fetched to reports/
	grasptpu firmware-test --board $(BOARD) --inventory $(INVENTORY)

test: $(STAMP)  ## the whole test suite, slow end-to-end tests included
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)  ## the test suite without the slow end-to-end tests
	$(PYTHON) -m pytest -q -m "not slow"

bench: bench-data bench-train bench-quant bench-board  ## every benchmark (long: bench-train trains 12 models); bench-board needs a deploy

bench-data: $(STAMP)  ## data-stage benchmark on the largest session vs neo.io baselines (minutes)
	$(PYTHON) tools/bench_data.py --session MRec41 --out $(DATA)/bench

bench-train: $(STAMP)  ## train both decoders on all six sessions: times and the accuracy table (long)
	$(PYTHON) tools/bench_train.py --data $(DATA) --models $(MODELS)/bench

bench-quant: $(STAMP)  ## quantise the bench-train models: sizes, float vs int8 accuracy, 1-thread latency
	$(PYTHON) tools/bench_quant.py --models $(MODELS)/bench

board-up: $(STAMP) sshd  ## start simulated board board1 (local sshd on 127.0.0.1:2201, inventory .boards/boards.toml)
	$(PYTHON) tools/sim_board.py up --name board1 --port 2201

board-down:  ## stop every simulated board (files kept; `tools/sim_board.py down --all --purge` removes them)
	$(PYTHON) tools/sim_board.py down --all

check-sessions: $(STAMP)  ## write all six sessions and read each back with plain neo.io (long, ~5 GB RAM)
	grasptpu synth --all --out $(DATA)
	$(PYTHON) tools/check_sessions.py $(DATA)

clean:  ## remove generated data and the install stamp (not the cache)
	rm -rf $(DATA) .make
