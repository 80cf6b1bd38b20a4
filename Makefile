# grasptpu: host -> models/ -> board. `make help` lists the targets.
PYTHON ?= python3
DATA ?= data
SESSION ?= ZRec50
RECORDING = $(DATA)/$(SESSION).neo.mat
STAMP = .make/installed

MODELS ?= models
.PHONY: help install demo data data-all prepare train test test-fast bench bench-data bench-train check-sessions clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev]'
	@mkdir -p .make && touch $@

install: $(STAMP)  ## install grasptpu and its dev tools into $(PYTHON)

demo: prepare train  ## the main job on the embedded default session, as far as the pipeline reaches today

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

test: $(STAMP)  ## the whole test suite, slow end-to-end tests included
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)  ## the test suite without the slow end-to-end tests
	$(PYTHON) -m pytest -q -m "not slow"

bench: bench-data bench-train  ## every benchmark

bench-data: $(STAMP)  ## data-stage benchmark on the largest session vs neo.io baselines (minutes)
	$(PYTHON) tools/bench_data.py --session MRec41 --out $(DATA)/bench

bench-train: $(STAMP)  ## train both decoders on all six sessions: times and the accuracy table (long)
	$(PYTHON) tools/bench_train.py --data $(DATA) --models $(MODELS)/bench

check-sessions: $(STAMP)  ## write all six sessions and read each back with plain neo.io (long, ~5 GB RAM)
	grasptpu synth --all --out $(DATA)
	$(PYTHON) tools/check_sessions.py $(DATA)

clean:  ## remove generated data and the install stamp (not the cache)
	rm -rf $(DATA) .make
