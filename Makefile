# Two commands do everything on a fresh clone:  make study   |   make test
# Both create the environment (.venv) on first use and reuse it afterwards.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# the project's tools, one command (advgame --help)
ADVGAME := $(VENV)/bin/advgame
SEEDS ?= 1 2
PAPER_SEEDS ?= 3 4   # make seeds: the paper's defenders only (the specification: >= 5 seeds for them, >= 3 for the others)
# make compare: the experiments of the last COMMITS commits (default: back to the oldest seed experiment, at least 3)
COMMITS ?= $(shell $(ADVGAME) seeds commits 2>/dev/null || echo 3)
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: study test seeds compare pipeline check-pipeline bench ui ui-check server clean-tracking lock verify

# requirements.lock: every package pinned with its sha256 hashes (pip refuses a file that differs);
# the project itself goes on top without resolving again
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# `advgame warm`: dvc repro with every stage started from a fork server that has torch and MLflow
# imported (the same outputs, byte for byte; about 5 s less per stage on 2 cores)
study: $(STAMP)
	@$(ADVGAME) pipeline --check 2>/dev/null || $(ADVGAME) pipeline
	$(ADVGAME) warm -- dvc repro
	@$(ADVGAME) summary

# one pytest worker per core (at most 4), each test file on one worker: the end-to-end file keeps
# its one tiny pipeline run (a module fixture) while the unit tests run beside it; files go out
# in collection order, which tests/conftest.py sets longest first
test: $(STAMP)
	ADVGAME_TRACKING=off $(VENV)/bin/pytest -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

seeds: $(STAMP)      ## training seeds 1 and 2 of every defender, 3 and 4 of the paper's (dvc experiments) -> reports/seeds.json, report
	$(ADVGAME) seeds run --seeds $(SEEDS)
	$(ADVGAME) seeds run --seeds $(PAPER_SEEDS) --scope paper
	$(ADVGAME) pipeline
	dvc repro report

compare: $(STAMP)    ## experiments of the last $(COMMITS) commits side by side: the params and headline metrics that differ (no dependency hashes)
	dvc exp show -n $(COMMITS) --only-changed --drop '^(src|stages|models|data|reports)/' $(ARGS)

pipeline: $(STAMP)   ## regenerate dvc.yaml after changing catmouse.rounds or study.defenders
	$(ADVGAME) pipeline

verify: $(STAMP)     ## do this workspace's headline numbers agree with the committed ones? (ARGS="--repro" reruns the study first)
	$(ADVGAME) verify $(ARGS)

bench: $(STAMP)      ## speed benchmarks (medians and ratios); never part of the tests
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

ui: $(STAMP)         ## MLflow UI on http://127.0.0.1:5000 (of MLFLOW_TRACKING_URI's store if set)
	@uri="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"; \
	case "$$uri" in http*) echo "MLFLOW_TRACKING_URI is a server: its UI is $$uri";; \
	*) $(VENV)/bin/mlflow ui --backend-store-uri "$$uri" --host 127.0.0.1 --port 5000;; esac

ui-check: $(STAMP)   ## screenshots of the MLflow UI (headless Chromium) -> docs/ui-*.png; URI=... for another store
	$(PY) scripts/ui_check.py "$${URI:-$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}}" --out docs

server: $(STAMP)     ## team MLflow server on http://127.0.0.1:5000, PostgreSQL + artifacts in .mlflow-server/
	$(ADVGAME) server --dir .mlflow-server --port 5000

lock:                ## refresh requirements.lock (pins + sha256 hashes, for this platform's Python) from a fresh resolve
	rm -rf .venv-lock && python3 -m venv .venv-lock && .venv-lock/bin/python -m pip install -q pip-tools
	.venv-lock/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  --extra test --extra team --strip-extras -o requirements.lock pyproject.toml && rm -rf .venv-lock
