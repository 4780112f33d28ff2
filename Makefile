# The README's two commands: `make run` (a real search on MIT-BIH) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default (0.75 GB); users with GPUs: make run TORCH_SPEC='torch==2.13.0' PIP_EXTRA='--index-url …'
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
MITDB_DIR ?= ../shared/data/mitdb
DATA_DIR ?= data/mitdb
SPACE ?= cnn
TRIALS ?= 8
EPOCHS ?= 4

.PHONY: run test venv lint bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@# A bare torch range would resolve to a 5.5 GB CUDA build: install the pinned wheel first.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

run: venv
	@if [ -f "$(MITDB_DIR)/100.hea" ]; then \
		echo "Preparing the real MIT-BIH Arrhythmia Database from $(MITDB_DIR) -> $(DATA_DIR)"; \
		$(BIN)/ecgsearch data prepare mitdb --source "$(MITDB_DIR)" --out "$(DATA_DIR)" && \
		$(BIN)/ecgsearch start --space $(SPACE) --data "$(DATA_DIR)" --trials $(TRIALS) --epochs $(EPOCHS); \
	else \
		echo "MIT-BIH records not found in $(MITDB_DIR) (looked for $(MITDB_DIR)/100.hea)."; \
		echo "Get them from PhysioNet: https://physionet.org/content/mitdb/1.0.0/ and set MITDB_DIR=/path/to/mitdb."; \
		echo "Running on a SYNTHETIC ECG-like dataset instead (data/synth) so the tool can be tried."; \
		$(BIN)/ecgsearch data synth --out data/synth && \
		$(BIN)/ecgsearch start --space $(SPACE) --data data/synth --study $(SPACE)-synth --trials $(TRIALS) --epochs $(EPOCHS); \
	fi

PY_DIRS := search spaces ecgmodels studies tests bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check $(PY_DIRS)

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) bench-quick

bench-quick: venv
	@for script in bench/[!_]*.py; do \
		[ -f "$$script" ] || continue; \
		echo "== $$script --quick"; \
		$(BIN)/python "$$script" --quick || exit 1; \
	done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
