# Quick start: `make run` (demo pipeline) and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run build test dev sql benchmark-finetune benchmark-query benchmark-incremental clean

install: $(STAMP)

# torch is installed first and pinned, so no other requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/python -m embetter_assets.demo

# Every asset for the batch files you put in data/texts and data/labels, without the daemon.
build: install
	$(BIN)/embetter-assets build

test: install
	$(BIN)/python -m pytest

dev: install
	$(BIN)/dagster dev -w workspace.yaml

# The duckdb shell on the store, read-only so that materializations can still write when it is closed.
sql: install
	$(BIN)/duckdb -readonly data/embetter.duckdb

benchmark-finetune: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,benchmark]'
	$(BIN)/python benchmarks/finetune_quality.py

benchmark-query: install
	$(BIN)/python benchmarks/query.py

benchmark-incremental: install
	$(BIN)/python benchmarks/incremental.py

clean:
	rm -rf $(VENV)
