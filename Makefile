# grasptpu: host -> models/ -> board. `make help` lists the targets.
# Every target runs inside the project's own virtual environment (.venv, made from the machine's
# python3 and filled from pyproject.toml only), so nothing installed elsewhere on the machine can
# help or hurt. PYTHON is only the interpreter that creates it.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
GRASPTPU = $(VENV)/bin/grasptpu
DATA ?= data
SESSION ?= ZRec50
RECORDING = $(DATA)/$(SESSION).neo.mat
STAMP = $(VENV)/.installed

MODELS ?= models
MODEL_DIRS = $(MODELS)/$(SESSION)-object $(MODELS)/$(SESSION)-grasp-phase $(MODELS)/$(SESSION)-aperture
BOARD ?= board1
INVENTORY ?= .boards/boards.toml
SIMULATED = $(filter .boards/boards.toml,$(INVENTORY))
.PHONY: help install deps-check sshd demo data data-all prepare train quantize compile deploy bench-board firmware-test test test-fast bench bench-data bench-nwb bench-train bench-quant profile-train tune-all board-up board-down check-sessions clean chromium live report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv (from $(PYTHON)) and install grasptpu and its dev tools into it

demo: prepare train quantize compile deploy bench-board firmware-test live report  ## the main job end to end: default session -> simulated board -> live session -> reports/report.html

$(RECORDING): | $(STAMP)
	$(GRASPTPU) synth --session $(SESSION) --out $(DATA)

data: $(RECORDING)  ## write the embedded default synthetic session (ZRec50)

data-all: $(STAMP)  ## write all six synthetic sessions
	$(GRASPTPU) synth --all --out $(DATA)

prepare: $(RECORDING)  ## load, bin (cached), split and window the default session; print the summary
	$(GRASPTPU) prepare $(RECORDING)

train: $(RECORDING)  ## train the object classifier, the grasp-phase detector and the aperture regressor on the default session
	$(GRASPTPU) train $(RECORDING) --task object --models-dir $(MODELS)
	$(GRASPTPU) train $(RECORDING) --task grasp-phase --models-dir $(MODELS)
	$(GRASPTPU) train $(RECORDING) --task aperture --models-dir $(MODELS)

quantize: $(STAMP)  ## int8 + float TFLite of the three models, then the float-vs-int8 gate (fails on a regression)
	$(GRASPTPU) quantize $(MODEL_DIRS)
	$(GRASPTPU) check-quant $(MODEL_DIRS)

compile: $(STAMP)  ## edgetpu_compiler on the three int8 models; without the compiler: says so, keeps the check as evidence
	@$(GRASPTPU) compile $(MODEL_DIRS); rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "make compile: no edgetpu_compiler here; Edge TPU check of the int8 models:"; \
	  $(GRASPTPU) edgetpu-check $(MODEL_DIRS); else exit $$rc; fi

sshd:  ## install Debian's OpenSSH server (the simulated boards' sshd) if it is missing
	@test -x /usr/sbin/sshd || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server; }

deploy: $(STAMP) $(if $(SIMULATED),board-up)  ## push the three models, device/ and firmware_tests/ to $(BOARD) (default: the simulated board)
	$(GRASPTPU) deploy $(MODEL_DIRS) --board $(BOARD) --inventory $(INVENTORY)

bench-board: $(STAMP)  ## device.bench + device.stream on $(BOARD) over SSH, beside the host's figures (exit 1 on a miss)
	$(GRASPTPU) bench --board $(BOARD) --inventory $(INVENTORY) --json reports/bench-$(BOARD).json

firmware-test: $(STAMP)  ## the on-board pytest suite on $(BOARD); junit report fetched to reports/
	$(GRASPTPU) firmware-test --board $(BOARD) --inventory $(INVENTORY)

chromium:  ## install Debian's Chromium (the report test opens the page in it, headless) if it is missing
	@test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

LIVE_TRIALS ?= 10
live: $(STAMP) $(if $(SIMULATED),board-up)  ## replay LIVE_TRIALS test trials over LSL into device.live on $(BOARD), record, compare with device.stream (0 = all)
	$(GRASPTPU) live $(MODEL_DIRS) --board $(BOARD) --inventory $(INVENTORY) --trials $(LIVE_TRIALS)

report: $(STAMP)  ## reports/report.html from the last live session on $(BOARD) and its board bench (reports/bench-$(BOARD).json, if any)
	@bench=reports/bench-$(BOARD).json; set -x; \
	$(GRASPTPU) report $$( [ -f $$bench ] && echo --bench $$bench ) --live reports/live-$(BOARD) --out reports/report.html

deps-check: $(STAMP)  ## every imported third-party module is declared in pyproject.toml, and every declared one is used (deptry)
	$(PY) -m deptry .

test: deps-check sshd chromium  ## the whole test suite, slow end-to-end tests included
	$(PY) -m pytest -q

test-fast: deps-check chromium  ## the test suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

bench: bench-data bench-nwb bench-train bench-quant bench-board  ## every benchmark (long: bench-train trains 18 models, 4 reference runs and 4 searches); bench-board needs a deploy

bench-data: $(STAMP)  ## data-stage benchmark on the largest session vs neo.io baselines (minutes)
	$(PY) tools/bench_data.py --session MRec41 --out $(DATA)/bench

bench-nwb: $(STAMP)  ## cold prepare of an NWB session (400 units x 700 trials) vs pynwb's read() alone
	$(PY) tools/bench_data.py --session MRec41 --format nwb --units 400 --trials 700 --out $(DATA)/bench

bench-train: $(STAMP)  ## six-session training table, ours vs the reference way (time, epochs, peak RSS), tuning trials/hour with 1/2/4 workers (long)
	$(PY) tools/bench_train.py --data $(DATA) --models $(MODELS)/bench
	$(PY) tools/bench_reference.py $(RECORDING) --tasks object,grasp-phase --json $(MODELS)/bench/bench-reference.json
	$(PY) tools/bench_tune.py $(RECORDING) --workers 1,2,4 --json $(MODELS)/bench/bench-tune.json

profile-train: $(STAMP)  ## where one training epoch's time goes (feed, train step, validation) on the default session's detector
	$(PY) tools/profile_train.py $(RECORDING) --task grasp-phase

SESSIONS ?= MRec40 MRec41 MRec42 ZRec32 ZRec35 ZRec50
TASKS ?= object grasp-phase aperture
WORKERS ?= 2
TRIALS ?= 20
tune-all: $(STAMP)  ## tune every session x task (SESSIONS x TASKS), each search spread over WORKERS local workers (default 2)
	@for s in $(SESSIONS); do test -f $(DATA)/$$s.neo.mat || $(GRASPTPU) synth --session $$s --out $(DATA) || exit 1; \
	  for t in $(TASKS); do $(GRASPTPU) tune $(DATA)/$$s.neo.mat --task $$t --max-trials $(TRIALS) --workers $(WORKERS) \
	    --models-dir $(MODELS) || exit 1; done; done

bench-quant: $(STAMP)  ## quantise the bench-train models: sizes, float vs int8 accuracy, 1-thread latency
	$(PY) tools/bench_quant.py --models $(MODELS)/bench

board-up: $(STAMP) sshd  ## start simulated board board1 (local sshd on 127.0.0.1:2201, inventory .boards/boards.toml)
	$(PY) tools/sim_board.py up --name board1 --port 2201

board-down: $(STAMP)  ## stop every simulated board (files kept; `tools/sim_board.py down --all --purge` removes them)
	$(PY) tools/sim_board.py down --all

check-sessions: $(STAMP)  ## write all six sessions and read each back with plain neo.io (long, ~5 GB RAM)
	$(GRASPTPU) synth --all --out $(DATA)
	$(PY) tools/check_sessions.py $(DATA)

clean:  ## remove generated data and the project's environment (not the cache)
	rm -rf $(DATA) $(VENV) .make
