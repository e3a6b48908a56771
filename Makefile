# Two commands on a fresh machine:  `make demo` (the Gradio app)  and  `make test` (the test suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-bf16 bench
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/python -m gui

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The precision-dependent tests again, with `precision=auto` resolving as on a CPU with native bf16
# (emulated where the CPU has none): what CI runs after `make test` (docs/precision.md).
BF16_TESTS := tests/test_precision.py tests/test_samplers.py tests/test_sampling.py tests/test_evaluate.py \
	tests/test_convert.py tests/test_hub.py "tests/test_notebooks.py::test_notebook_runs_in_quick_mode[01_quickstart]" \
	"tests/test_notebooks.py::test_notebook_runs_in_quick_mode[06_pareto]"
test-bf16: install
	DLM_NATIVE_BF16=1 $(BIN)/python -m pytest -q -p no:cacheprovider -k "not small_fine_tune" $(BF16_TESTS)

bench: install
	$(BIN)/python -m toolkit.bench --json runs/bench.json
