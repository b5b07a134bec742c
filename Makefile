# vidgen: `make demo` runs the main job on the embedded sample data, `make test` the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is pinned here so that a fresh machine does not pull a multi-GB CUDA
# build; users installing with pip keep the open range declared in pyproject.toml.
TORCH_PIN ?= torch==2.13.0
# timm, open_clip and torch-fidelity import torchvision; the release built for this torch is
# installed without its dependencies so that pip never replaces the pinned torch.
TORCHVISION_PIN ?= torchvision==0.28.0
OUT ?= out/demo

.PHONY: venv demo test test-all bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q --no-deps "$(TORCHVISION_PIN)"
	$(BIN)/pip install -q -e ".[dev]" || $(BIN)/pip install -q -e .
	$(BIN)/pip install -q pytest
	touch $@

demo: venv
	$(BIN)/python tools/demo.py --out $(OUT)

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: venv
	@for b in tools/bench_*.py; do echo "# $$b" >&2; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) out
